"""Kernel headers for bcc's compile step. Our code sets BCC_KERNEL_SOURCE; the user never has to."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from ..errors import Unsupported

HEADERS_ROOT = Path(os.environ.get("CHAOS_INJECT_HEADERS_ROOT", "/var/cache/chaos-inject/headers"))


def find_kernel_headers() -> Path | None:
    """The distribution's headers for the running kernel, else the merged Debian tree made by `make setup`."""
    explicit = os.environ.get("BCC_KERNEL_SOURCE")
    if explicit and Path(explicit, "include").is_dir():
        return Path(explicit)
    release = platform.release()
    build = Path("/lib/modules", release, "build")
    if (build / "include").is_dir():
        return build
    if not HEADERS_ROOT.is_dir():
        return None
    # Prefer a tree made for this exact release, else the newest one (only stable UAPI types are used).
    candidates = sorted((p for p in HEADERS_ROOT.iterdir() if (p / "include/generated/autoconf.h").exists()),
                        key=lambda p: (p.name == release, p.stat().st_mtime), reverse=True)
    return candidates[0] if candidates else None


def ensure_bcc_kernel_source() -> Path:
    """Point bcc at usable headers (idempotent) or raise Unsupported naming the fix."""
    path = find_kernel_headers()
    if path is None:
        raise Unsupported(
            f"no kernel headers for bcc: neither /lib/modules/{platform.release()}/build nor a tree under "
            f"{HEADERS_ROOT}; run `sudo make setup`")
    if path != Path("/lib/modules", platform.release(), "build"):
        os.environ["BCC_KERNEL_SOURCE"] = str(path)
    return path
