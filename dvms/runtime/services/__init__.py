"""The daemon's services on top of the node shell: the host monitor, replicated state in
DHT records, vjobs, namespaces and their effects on this host, and the partition log."""
