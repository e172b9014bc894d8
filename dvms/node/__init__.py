"""The node daemon: configuration, the control socket and ``dvms node run``."""
