"""The kernel floor: netlink, tc, BPF loading, the ledger and the owner that undoes every change."""
