"""The control socket: its server and the commands a daemon answers there."""
