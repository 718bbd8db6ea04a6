"""Server-rendered HTML pages of the challenge server (Jinja2, shared layout and stylesheet).

The templates in ``cellbench/server/templates`` extend the leaderboard site's ``base.html``
(:mod:`cellbench.leaderboard.templates`): same layout, stylesheet and sortable-table script,
autoescaping on, no inline script or style, so the pages work under the server's strict
Content-Security-Policy. ``server.css`` adds forms and status colours; tables scroll inside
their box, so pages stay usable at phone width.
"""

from __future__ import annotations

import json
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cellbench.challenge.prepare import PreparedChallenge
from cellbench.server import accounts
from cellbench.server.db import Submission, Team, sessions, utcnow
from cellbench.server.views import day_window, iso, submissions_today

_ASSETS = {
    "style.css": ("cellbench.leaderboard", "templates/assets/style.css"),
    "leaderboard.js": ("cellbench.leaderboard", "templates/assets/leaderboard.js"),
    "server.css": ("cellbench.server", "templates/assets/server.css"),
}


class Pages:
    """Renders every page for one server state (see :mod:`cellbench.server.app`)."""

    def __init__(self, state: Any) -> None:
        self.state = state

    @cached_property
    def env(self) -> Any:
        """The leaderboard site's environment, with the server templates in front."""
        import jinja2

        from cellbench.leaderboard.templates import environment

        base = environment()
        return base.overlay(
            loader=jinja2.ChoiceLoader(
                [jinja2.PackageLoader("cellbench.server", "templates"), base.loader]
            )
        )

    def _render(self, template: str, team: Team | None, cookie: str = "", **ctx: Any) -> str:
        from cellbench.server.app import META_CSP

        csrf = accounts.csrf_token(self.state.session_secret, cookie) if cookie else ""
        return self.env.get_template(template).render(
            root="/static/",
            csp=META_CSP,
            team=team,
            csrf=csrf,
            refresh=ctx.pop("refresh", 0),
            **ctx,
        )

    # ------------------------------------------------------------------ pages
    def _state_of(self, challenge: PreparedChallenge) -> str:
        now = utcnow()
        phase = challenge.config.phase_at(now)
        if phase is None:
            return f"closed at {iso(challenge.config.final_deadline)}; private scores revealed"
        return f"open (phase {phase.name}, until {iso(phase.deadline)})"

    def index(self, team: Team | None, cookie: str = "") -> str:
        """The challenge list."""
        rows = []
        for c in self.state.challenges.values():
            rows.append(
                {
                    "id": c.id,
                    "title": c.config.title,
                    "task": c.config.task,
                    "dataset": c.config.dataset,
                    "state": self._state_of(c),
                }
            )
        return self._render("index.html", team, cookie, challenges=rows)

    def challenge(self, challenge: PreparedChallenge, team: Team | None, cookie: str = "") -> str:
        """A challenge's card, rules, commitment and deadlines."""
        now = utcnow()
        info = challenge.public_info(revealed=challenge.config.closed(now))
        return self._render(
            "challenge.html",
            team,
            cookie,
            c=info,
            state=self._state_of(challenge),
            open=challenge.config.phase_at(now) is not None,
            metric_parameters=json.dumps(info["metric_parameters"], indent=1, sort_keys=True),
        )

    def leaderboard(
        self,
        challenge: PreparedChallenge,
        board: dict[str, Any],
        team: Team | None,
        cookie: str = "",
    ) -> str:
        """A challenge's leaderboard."""
        return self._render(
            "challenge_board.html", team, cookie, c=challenge.public_info(), board=board
        )

    def submit_form(
        self,
        challenge: PreparedChallenge,
        team: Team,
        cookie: str,
        problems: list[str] | None = None,
        values: dict[str, str] | None = None,
    ) -> str:
        """The upload form (with every problem of a refused upload)."""
        now = utcnow()
        with sessions(self.state.engine)() as session:
            used = submissions_today(session, team.id, challenge.id, now)
        remaining = max(0, challenge.config.limits.submissions_per_day - used)
        return self._render(
            "submit.html",
            team,
            cookie,
            c=challenge.public_info(),
            problems=problems or [],
            values=_Values(values or {}),
            remaining=remaining,
        )

    def submission(self, view: dict[str, Any], team: Team, cookie: str = "") -> str:
        """A submission's status, history, problems and scores."""
        refresh = 0 if view["final"] else 2
        return self._render("submission.html", team, cookie, s=view, refresh=refresh)

    def team_data(self, team: Team) -> dict[str, Any]:
        """A team's submissions and today's quota per challenge (also ``GET /api/team``)."""
        now = utcnow()
        _, reset = day_window(now)
        with sessions(self.state.engine)() as session:
            query = select(Submission).order_by(Submission.created_at.desc()).limit(200)
            if not team.organiser:
                query = query.where(Submission.team_id == team.id)
            subs = session.scalars(query).all()
            quota = [
                {
                    "challenge": c.id,
                    "used": submissions_today(session, team.id, c.id, now),
                    "limit": c.config.limits.submissions_per_day,
                    "resets_at": iso(reset),
                    "open": c.config.phase_at(now) is not None,
                }
                for c in self.state.challenges.values()
            ]
        return {
            "team": team.name,
            "organiser": team.organiser,
            "quota": quota,
            "submissions": [
                {
                    "id": s.id,
                    "challenge": s.challenge_id,
                    "name": s.name,
                    "kind": s.kind,
                    "state": s.state,
                    "created_at": iso(s.created_at),
                    "public": json.loads(s.public_json)["headline"]["value"]
                    if s.public_json
                    else None,
                }
                for s in subs
            ],
        }

    def team(self, team: Team, cookie: str) -> str:
        """The team page."""
        return self._render("team.html", team, cookie, t=self.team_data(team))

    def signin(self, next_url: str, problem: str = "") -> str:
        """The sign-in form."""
        return self._render("signin.html", None, "", next=next_url, problem=problem)

    def error(self, status: int, message: str, team: Team | None = None, cookie: str = "") -> str:
        """An error page."""
        return self._render("error.html", team, cookie, status=status, message=message)

    @staticmethod
    def manifest_from_form(fields: dict[str, str]) -> str:
        """The manifest YAML of the upload form's fields (validated like any manifest)."""
        import yaml

        def number(key: str) -> Any:
            text = fields.get(key, "").strip()
            return int(text) if text.isdigit() else text

        data = {
            "name": fields.get("name", ""),
            "authors": [a.strip() for a in fields.get("authors", "").split(",") if a.strip()],
            "contact": fields.get("contact", ""),
            "code": {"url": fields.get("code_url", ""), "commit": fields.get("code_commit", "")},
            "training_data": fields.get("training_data", ""),
            "n_parameters": number("n_parameters"),
            "seed": number("seed") if fields.get("seed", "").strip() else 0,
            "hardware": fields.get("hardware", ""),
            "license": fields.get("license", ""),
            "notes": fields.get("notes", ""),
        }
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    @staticmethod
    def static_file(name: str) -> Path | None:
        """Path of a stylesheet or script served under ``/static/assets/`` (None if unknown)."""
        entry = _ASSETS.get(name)
        if entry is None:
            return None
        package, rel = entry
        return Path(str(resources.files(package).joinpath(rel)))


class _Values(dict):
    """Form values; a missing key reads as an empty string."""

    def __getattr__(self, key: str) -> str:
        return str(self.get(key, ""))
