import pytest

from analysis_synth import DISTRIBUTIONS


@pytest.fixture(params=sorted(DISTRIBUTIONS))
def dist(request):
    return request.param, DISTRIBUTIONS[request.param]
