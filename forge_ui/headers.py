"""Security headers on every answer of the forge's pages and API (the git remote, plain
WSGI outside the app, sends none: its clients are git).

- `Content-Security-Policy`: scripts only from the forge's own files, plus the few inline
  ones of the templates, each with this response's nonce (`csp_nonce()` in templates);
  styles from its files and inline (xterm.js and uPlot set them from script; a style
  cannot run code); connections (the websockets) and images (`data:` for xterm.js) only
  from the forge; no plugins, no `<base>`, forms post only to the forge, and no page may
  frame it (`frame-ancestors 'none'`, with `X-Frame-Options: DENY` for older browsers).
- `Referrer-Policy: same-origin`: links to elsewhere carry no URL of the forge; the forge
  still gets its own (flask-wtf's CSRF check over HTTPS compares the Referer).
- `X-Content-Type-Options: nosniff`: a repo file served as text is never run as a script.
"""

import secrets

from flask import Flask, Response, g

CSP = (
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}


def csp_nonce() -> str:
    """This response's script nonce (one per request)."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce


def init_app(app: Flask) -> None:
    app.jinja_env.globals["csp_nonce"] = csp_nonce

    @app.after_request
    def secure(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        if response.status_code != 304:  # the stored page keeps its policy and nonce (etags)
            response.headers.setdefault("Content-Security-Policy", CSP.format(nonce=csp_nonce()))
        return response
