"""The operators' web UI, served by the commands service (docs/ui.md).

* :mod:`services.web.operators` — operator accounts (Postgres, argon2id) and their CLI;
* :mod:`services.web.sessions` — sign-in, server-side sessions, CSRF tokens, lockout;
* :mod:`services.web.security` — security headers (CSP without inline script, no framing);
* :mod:`services.web.forms` — compose form and pasted audience → commands (pure);
* :mod:`services.web.present` — what a row, menu and popover show (pure; menus from core);
* :mod:`services.web.pages` — the routes: pages, fragments for htmx, actions;
* ``templates/`` (Jinja2, autoescaped) and ``static/`` (CSS, JS, vendored htmx and Swagger UI).
"""
