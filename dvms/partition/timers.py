"""Timer kinds of the partition core's timer heap (shared by its modules)."""

(
    T_RPC,
    T_LEASE,
    T_KEEPALIVE,
    T_MONITOR,
    T_STATES,
    T_ACTION,
    T_RETRY,
    T_FLUSH,
    T_SUSPECT,
    T_UNDERLOAD,
) = range(10)
