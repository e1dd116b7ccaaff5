#!/usr/bin/python
# Copyright: stackrox.prefetch contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# Documentation only: the work is done on the controller by the action plugin plugins/action/report.py.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: report
short_description: Write the reports of a prefetch run (JUnit XML, Markdown, JSON, timeline SVG) on the controller
version_added: 0.1.0
description:
  - Writes, into O(dest) on the controller, per cluster host C(<basename>.junit.xml) (a testsuite for the instance,
    a testcase per node and image; a failure with the agent's reason for a failed image, skipped for an image that
    was already present, an error for every image of a node that did not finish), C(<basename>.md) (the per-node
    table, failed images and warnings as Markdown, for C($GITHUB_STEP_SUMMARY)), C(<basename>.json) (the whole
    O(result)) and, when O(result) carries metrics, C(<basename>.timeline.svg) (one row per node, one bar per pull
    attempt, failed attempts hatched red, the wait before each retry dashed, an axis in seconds).
  - A testcase's time is the sum of the image's attempt durations from the metrics when they were collected, else the
    node's run time.
  - Without metrics the agent's summary names the failed images only; a node that pulled some images and found
    others already present reports all its other images as passed, with a note (skipped only when every image was).
  - Runs on the controller whatever the task's delegation (an action plugin; nothing is sent to a host). Files are
    replaced atomically and only when their content changed.
  - The role M(stackrox.prefetch.images) calls it with C(images_report_dir).
author:
  - stackrox.prefetch contributors (@stackrox)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: In check mode nothing is written; C(changed) says whether a file would change.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  result:
    description:
      - A run's result, as the role's C(images_result) fact holds it (C(cluster), C(name), C(namespace), C(failed),
        C(msg), C(nodes), C(totals), C(metrics), ... from M(stackrox.prefetch.rollout)).
    type: dict
    required: true
  images:
    description:
      - The instance's image list, so that every node x image gets a testcase. Without it, the images the nodes and
        metrics name.
    type: list
    elements: str
    default: []
  dest:
    description: Directory on the controller the files are written to; created when missing.
    type: path
    required: true
  basename:
    description: File name prefix. Default the result's C(cluster) (the inventory host), made safe for a file name.
    type: str
seealso:
  - module: stackrox.prefetch.rollout
"""

EXAMPLES = r"""
- name: Write the reports of a run
  stackrox.prefetch.report:
    result: "{{ images_result }}"
    images: [registry.example.com/app:2.0]
    dest: reports/
"""

RETURN = r"""
files:
  description: The files written (or, in check mode, that would be written), absolute paths.
  returned: always
  type: list
  elements: str
  sample: [/ci/reports/prod-east.junit.xml, /ci/reports/prod-east.md, /ci/reports/prod-east.json]
"""
