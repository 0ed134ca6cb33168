#!/usr/bin/env python3
"""The content rules of bench/rules_e2e.sh and bench/scan_e2e.sh, as TOML
on stdout:

    content_rules.py N

For N > 0, N + 1 [[content_rule]] tables (none for 0): one on attachment
names (so that every message is parsed as MIME and its parts typed),
N - 1 that test the decoded body and the Subject
('body ~ /wordI\\s+termI/ or subject ~ /subjI(x|y)/'), which ringway-load's
messages do not hold, and one that adds a header to every message
(add-header).
"""
import sys
n = int(sys.argv[1])
if n:
    print('[[content_rule]]\nname = "exe"\ncondition = \'attachment-name ~ /\\.(exe|scr|js)$/\'\n'
          'actions = ["reject 550 5.7.1 No executables"]\n')
for i in range(n - 1 if n else 0):
    print(f'[[content_rule]]\nname = "r{i}"\n'
          f"condition = 'body ~ /word{i}\\s+term{i}/ or subject ~ /subj{i}(x|y)/'\n"
          f'actions = ["tag-subject [R{i}]"]\n')
if n:
    print('[[content_rule]]\nname = "mark"\ncondition = \'size > 0\'\nactions = ["add-header X-Rules: checked"]\n')
