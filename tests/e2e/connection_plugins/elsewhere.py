# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A connection that runs on this machine but is not ``local`` to the collection's action plugins: the
``rollout`` plugin then takes its path for another host (the state file read through the connection, with
``cat``), which the end-to-end tests can follow without an SSH server."""

from __future__ import annotations

from ansible.plugins.connection.local import DOCUMENTATION as LOCAL_DOCUMENTATION
from ansible.plugins.connection.local import Connection as LocalConnection

DOCUMENTATION = LOCAL_DOCUMENTATION.replace("name: local", "name: elsewhere", 1)


class Connection(LocalConnection):
    transport = "elsewhere"
