"""Host faults (kill a process, stress the CPU), Chaos Toolkit layout: :mod:`.actions`."""
