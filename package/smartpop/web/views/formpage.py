"""The skeleton every settings page shares: show the stored settings; save a posted form or show it again.

A settings page (alerts, relay, routing, the trail's settings) is a form over one part of
config.json. GET renders the stored values (never a password: `shown` leaves them out); POST
applies an edit through the config store (locked, validated, atomic) and redirects with a
notice, or renders the form again with the posted values and an error at each field (422).
The CSRF check of every POST happens before any view runs (web/app.py).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional, Tuple, Union

from flask import Response, g, redirect, url_for
from werkzeug.wrappers import Response as BaseResponse

from smartpop.config.schema import Config
from smartpop.errors import ConfigError
from smartpop.web.forms import Document, FormError, change_document
from smartpop.web.views.common import load_config, page, paths

Reply = Union[str, BaseResponse]
Loaded = Tuple[Optional[Config], Optional[str]]
Shown = Callable[[Optional[Config]], Dict[str, Any]]


def reply(body: str, status: int = 200) -> Reply:
    """A rendered page as the answer, with `status` when it is not 200 (a refused save: 422)."""
    return Response(body, status=status) if status != 200 else body


class SettingsPage:
    """One settings page: its template, the values its form shows, and what else the template needs.

    `shown(config)` gives the form's values from the stored config (None when it is missing or
    invalid, then the schema's defaults); `context_of(config)` the rest of the template's context.
    """

    def __init__(self, template: str, title: str, name: str, shown: Shown, context_of: Optional[Shown] = None) -> None:
        self.template = template
        self.title = title
        self.name = name
        self.shown = shown
        self.context_of = context_of

    def render(self, values: Optional[Dict[str, Any]] = None, errors: Optional[Dict[str, str]] = None,
               status: int = 200, loaded: Optional[Loaded] = None, **context: Any) -> Reply:
        """The page with the stored values, `values` (the posted ones) over them, and `errors` at their fields."""
        config, error = loaded if loaded is not None else load_config()
        shown = self.shown(config)
        if values:
            shown.update(values)
        if self.context_of is not None:
            context = {**self.context_of(config), **context}
        context[self.name] = shown
        return reply(page(self.template, page_title=self.title, errors=errors or {}, config_error=error, **context),
                      status)


def save_form(endpoint: str, edit: Callable[[Document], None], refused: Callable[[Exception], Reply],
              log: logging.Logger, said: str, *args: Any, check: Optional[Callable[[Config, Config], None]] = None,
              done: str = "saved", anchor: str = "") -> Reply:
    """Apply `edit` (with `check`, see change_document) and redirect to `endpoint` with notice `done`.

    A ConfigError or FormError answers `refused(exc)` instead: the form again with its errors.
    `said % (*args, user)` goes to the view's log `log`, so each page keeps its own logger.
    """
    try:
        change_document(paths(), edit, check)
    except (ConfigError, FormError) as exc:
        return refused(exc)
    log.info(said, *args, g.caller.user)
    return redirect(url_for(endpoint, done=done) + anchor)
