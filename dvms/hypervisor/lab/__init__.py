"""Real-infrastructure helpers for integration tests, benchmarks and demos (root only).

- ``guest``    a tiny TCG Linux guest from Debian's kernel and busybox-static
- ``daemons``  libvirtd nodes in private network + mount namespaces, the /dev/kvm fix
"""
