"""Create the test users in a Superset metadata DB (run by tests/test_superset.py with the Superset
venv's python and Superset's environment). Users are made by the tests, never shipped.

    python tests/superset_users.py '[{"username": "...", "password": "...", "roles": ["..."]}]'
"""

from __future__ import annotations

import json
import sys

from superset.app import create_app

app = create_app()
with app.app_context():
    from superset import db
    from superset import security_manager as sm

    for spec in json.loads(sys.argv[1]):
        if "copy_role" in spec:  # a role with another role's permissions but none of its RLS rules
            source = sm.find_role(spec["copy_role"]["from"])
            role = sm.add_role(spec["copy_role"]["name"])
            role.permissions = list(source.permissions)
            db.session.commit()
            continue
        roles = [sm.find_role(name) for name in spec["roles"]]
        if None in roles:
            sys.exit(f"unknown role in {spec['roles']}")
        if sm.find_user(username=spec["username"]) is None:
            sm.add_user(
                spec["username"], "Test", "User", f"{spec['username']}@localhost", roles, password=spec["password"]
            )
    print("users ready")
