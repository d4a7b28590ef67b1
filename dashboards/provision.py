"""Provision Superset from the repository, inside the Superset app (Superset venv):

1. the admin user, with the password from $SUPERSET_ADMIN_PASSWORD (never a default);
2. the assets of dashboards/assets.py (ImportAssetsCommand: databases -> datasets -> charts -> dashboards,
   idempotent by UUID), then every managed asset that is no longer declared is deleted;
3. the roles and the row-level security: a city analyst (every district, SQL Lab), one district analyst
   role per district (a Regular filter on every dataset with a district column), a policy viewer
   (dashboards only), a data steward (data health), and a Base filter `1 = 0` on the district datasets
   for everyone else, so that a user matched by no rule sees no rows rather than every row.

    python -m dashboards.provision --warehouse var/warehouse/citysafe_marts.duckdb
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from dashboards import assets

log = logging.getLogger("citysafe.superset")

CITY_ANALYST = "CitySafe City Analyst"
POLICY_VIEWER = "CitySafe Policy Viewer"
DATA_STEWARD = "CitySafe Data Steward"
DISTRICT_PREFIX = "CitySafe District Analyst "
STEWARD_DATASETS = (
    "mart_source_freshness",
    "mart_data_quality",
    "mart_data_quality_by_reason",
    "mart_unmapped_codes",
)
STEWARD_DASHBOARDS = ("citysafe-data-health",)
BASE_FILTER = "citysafe: no district role, no rows"
VIEWER_DENIED = {
    ("can_explore", "Superset"),
    ("can_explore_json", "Superset"),
    ("can_write", "Chart"),
    ("can_write", "Dashboard"),
    ("can_write", "Dataset"),
    ("can_csv", "Superset"),
    ("can_export", "Chart"),
    ("can_export", "Dashboard"),
}


def district_codes(warehouse: Path) -> list[str]:
    return [r[0] for r in assets.warehouse_rows(warehouse, "select district_code from main.dim_district order by 1")]


def ensure_admin(sm, password: str):
    admin_role = sm.find_role("Admin")
    user = sm.find_user(username="admin")
    if user is None:
        user = sm.add_user("admin", "CitySafe", "Admin", "admin@localhost", admin_role, password=password)
        log.info("created user admin")
    else:
        from werkzeug.security import check_password_hash, generate_password_hash

        if not check_password_hash(user.password, password):
            user.password = generate_password_hash(password)
            sm.update_user(user)
            log.info("admin password updated from the environment")
    return user


def import_assets(warehouse: Path) -> dict:
    from superset import db
    from superset.commands.importers.v1.assets import ImportAssetsCommand
    from superset.connectors.sqla.models import SqlaTable
    from superset.models.dashboard import Dashboard
    from superset.models.slice import Slice

    target = assets.Target.from_env()
    contents = assets.bundle(warehouse, target)
    password = os.environ.get("CITYSAFE_SUPERSET_WAREHOUSE_PASSWORD")
    if target.is_postgres and password:
        # the import takes the password from the URI (an import's `passwords` are overwritten by the URI's
        # empty one); Superset stores it encrypted with the secret key and shows the URI masked
        from sqlalchemy.engine.url import make_url

        path = "databases/citysafe_warehouse.yaml"
        database = yaml.safe_load(contents[path])
        url = make_url(database["sqlalchemy_uri"]).set(password=password)
        database["sqlalchemy_uri"] = url.render_as_string(hide_password=False)
        contents[path] = yaml.safe_dump(database, sort_keys=True, allow_unicode=True)
    ImportAssetsCommand(contents).run()
    declared = {
        Slice: {c.uuid for c in assets.CHARTS},
        Dashboard: {d.uuid for d in assets.DASHBOARDS},
        SqlaTable: {d.uuid for d in assets.DATASETS},
    }
    removed = {}
    for model, keep in declared.items():  # dashboards and charts before the datasets they use
        gone = [
            o for o in db.session.query(model).filter(model.is_managed_externally.is_(True)) if str(o.uuid) not in keep
        ]
        for obj in gone:
            db.session.delete(obj)
        removed[model.__name__] = len(gone)
    db.session.commit()
    return removed


def _role(sm, name: str, base_roles: tuple[str, ...], extra_perms: list) -> object:
    """A role with the permissions of `base_roles` plus `extra_perms`, reset on every run (code is the truth)."""
    role = sm.add_role(name)
    perms = {p for base in base_roles for p in sm.find_role(base).permissions}
    perms.update(p for p in extra_perms if p is not None)
    role.permissions = sorted(perms, key=lambda p: p.id)
    return role


def provision_roles(warehouse: Path) -> dict:
    from superset import db
    from superset import security_manager as sm
    from superset.connectors.sqla.models import RowLevelSecurityFilter, SqlaTable
    from superset.models.dashboard import Dashboard

    tables = {t.table_name: t for t in db.session.query(SqlaTable).filter(SqlaTable.is_managed_externally.is_(True))}
    access = {name: sm.add_permission_view_menu("datasource_access", t.perm) for name, t in tables.items()}
    district_tables = [t for t in tables.values() if assets.DISTRICT_COLUMN in {c.column_name for c in t.columns}]

    city = _role(sm, CITY_ANALYST, ("Gamma", "sql_lab"), list(access.values()))
    steward = _role(sm, DATA_STEWARD, ("Gamma",), [access[n] for n in STEWARD_DATASETS if n in access])
    viewer = _role(sm, POLICY_VIEWER, ("Gamma",), list(access.values()))
    # policy staff read dashboards: no explore, no saving charts or dashboards, no CSV of the rows
    viewer.permissions = [p for p in viewer.permissions if (p.permission.name, p.view_menu.name) not in VIEWER_DENIED]
    districts = {
        code: _role(sm, DISTRICT_PREFIX + code, ("Gamma",), list(access.values())) for code in district_codes(warehouse)
    }
    # dashboards are granted per role (DASHBOARD_RBAC): the steward sees data health only
    for dash in db.session.query(Dashboard).filter(Dashboard.is_managed_externally.is_(True)):
        granted = [city, viewer, *districts.values()]
        if dash.slug in STEWARD_DASHBOARDS:
            granted = [*granted, steward]
        dash.roles = granted

    wanted = {}
    for code, role in districts.items():
        wanted[f"citysafe: district {code}"] = ("Regular", f"{assets.DISTRICT_COLUMN} = '{code}'", [role])
    # everyone not named here sees nothing of the district datasets
    wanted[BASE_FILTER] = ("Base", "1 = 0", [sm.find_role("Admin"), city, viewer, *districts.values()])
    existing = {
        f.name: f
        for f in db.session.query(RowLevelSecurityFilter).filter(RowLevelSecurityFilter.name.like("citysafe: %"))
    }
    for name, f in existing.items():
        if name not in wanted:
            db.session.delete(f)
    for name, (kind, clause, roles) in wanted.items():
        f = existing.get(name) or RowLevelSecurityFilter(name=name)
        f.filter_type, f.clause, f.roles, f.tables = kind, clause, roles, district_tables
        f.description = "managed by dashboards/provision.py"
        db.session.add(f)
    db.session.commit()
    return {"roles": 3 + len(districts), "rls_filters": len(wanted), "district_datasets": len(district_tables)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", type=Path, required=True, help="the served DuckDB warehouse")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    password = os.environ.get("SUPERSET_ADMIN_PASSWORD", "")
    if len(password) < 12:
        print("provision: SUPERSET_ADMIN_PASSWORD is missing or shorter than 12 characters", file=sys.stderr)
        return 2
    if not args.warehouse.is_file():
        print(f"provision: warehouse not found: {args.warehouse} (run `make run` first)", file=sys.stderr)
        return 2
    from flask import g
    from superset.app import create_app

    app = create_app()
    with app.app_context():
        from superset import security_manager

        g.user = ensure_admin(security_manager, password)
        removed = import_assets(args.warehouse.resolve())
        roles = provision_roles(args.warehouse.resolve())
    print(
        f"provisioned: {len(assets.DATASETS)} datasets, {len(assets.CHARTS)} charts, "
        f"{len(assets.DASHBOARDS)} dashboards (removed {removed}); {roles}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
