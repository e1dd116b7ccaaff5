# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# The retry policy of every request apply and rollout send: plugins/module_utils/_cluster.py retry_decision,
# docs/DESIGN.md "API faults and retries" and docs/faults.md. Change them together.

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
notes:
  - "Retries: a request that fails for a passing reason is sent again, within the task's own time limit (the
    O(stackrox.prefetch.rollout#module:timeout) of M(stackrox.prefetch.rollout), the
    O(stackrox.prefetch.apply#module:wait_timeout) of M(stackrox.prefetch.apply)):
    after 429 Too Many Requests, and 503 with C(Retry-After), every request, after the C(Retry-After) the server
    asked for (else 0.5, 1, 2, 4, then every 8 seconds); after 500, 502, 503 and 504, only reads and server-side
    applies (which are idempotent), 4 attempts in all; after a connection that failed or broke, once the API server
    has answered in this run (a restarting server comes back; a wrong address fails at once), reads and applies
    until the time limit, and a delete only when the connection never opened, since a delete whose connection
    broke after it was sent may have been carried out. Objects are created by server-side apply, never by a
    create request. 401, 403, 404, 409 and 422 are never retried. The final message says how many attempts were
    made and why there were no more."
  - "Time limit: no retry starts that would end after the task's time limit, and each request's timeouts are cut
    to the time left, but to no less than 5 seconds to connect and 5 to read; so the task ends at the latest about
    10 seconds after its time limit (M(stackrox.prefetch.rollout): plus up to three such requests for its
    failure report)."
  - "Interruption: SIGINT or SIGTERM (Ctrl-C, ansible-playbook stopped) ends the task with a message naming
    what it was doing (M(stackrox.prefetch.apply): and which objects were written); when ansible-playbook exits
    without passing the signal on (ansible-core 2.16), the module notices within a second that nobody will read its
    result and ends as after SIGTERM."
"""
