"""Test infrastructure: real containerd nodes, a local registry, a fault-injecting proxy and a test-image pusher.

Import with ``PYTHONPATH=tests`` (``from infra.registry import Registry``). See docs/DESIGN.md "Test infrastructure".
"""
