"""Template attacks fail safely: sandbox escapes and resource abuse end in a
RenderError (never code execution, never a hung or exhausted sender), and
customer fields cannot inject markup into html/amp parts or headers into the
subject."""

from __future__ import annotations

import time
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import pytest

from campaignctl.diagnostics import Location
from campaignctl.model import Template
from campaignctl.templates import Links, MessageRenderer, RenderError

MJML = """<mjml><mj-head><mj-title>{{ subject }}</mj-title><mj-preview>{{ preheader }}</mj-preview></mj-head>
<mj-body><mj-section><mj-column>
<mj-text>Hello {{ customer.first_name }}</mj-text>
<mj-image src="https://static.example/logo.png" alt="{{ customer.first_name }}" href="{{ links.site }}" />
<mj-button href="{{ links.cart }}">Cart of {{ customer.first_name }}</mj-button>
</mj-column></mj-section></mj-body></mjml>
"""
AMP = """<!doctype html>
<html ⚡4email>
<head><meta charset="utf-8"><script async src="https://cdn.ampproject.org/v0.js"></script>
<style amp4email-boilerplate>body{visibility:hidden}</style></head>
<body><p title="{{ customer.first_name }}">Hi {{ customer.first_name }}</p></body>
</html>
"""


def renderer(tmp_path: Path, **templates: dict) -> MessageRenderer:
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "t/mail.mjml").write_text(MJML)
    (tmp_path / "t/mail.amp.html").write_text(AMP)
    built = {}
    for name, spec in templates.items():
        files = {part: tmp_path / spec[part] for part in ("mjml", "amp", "text", "html") if part in spec}
        built[name] = Template(name, Location("templates.yaml", 1, 1), spec, channel=spec.get("channel", "email"), files=MappingProxyType(files))
    return MessageRenderer(SimpleNamespace(root=tmp_path, templates=built))


def context(first_name: str = "Anna", **extra) -> dict:
    return {"customer": {"first_name": first_name, "customer_id": 7}, "links": Links("k/7"), "offer": None, "products": [], **extra}


ESCAPES = [
    "{{ customer.__class__ }}",
    "{{ customer.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__.mro()[1].__subclasses__() }}",
    "{{ links.__init__.__globals__ }}",
    "{{ links._key }}",
    "{{ cycler.__init__.__globals__.os.system('touch /tmp/pwned') }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ ''.format.__self__.__class__ }}",
    "{{ '{0.__class__.__mro__}'.format(customer) }}",
    "{{ '{0.__init__.__globals__}'.format(links) }}",
    "{{ customer.items.__self__.__class__ }}",
    "{{ (customer|attr('__class__')) }}",
    "{{ customer.update({'x': 1}) or range.__self__ }}",
    "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
]


@pytest.mark.parametrize("attack", ESCAPES)
def test_sandbox_escapes_end_in_a_render_error(tmp_path, attack):
    r = renderer(tmp_path, t={"channel": "sms", "body": attack})
    with pytest.raises(RenderError) as raised:
        r.render("t", context())
    assert raised.value.template == "t"
    assert not Path("/tmp/pwned").exists()


RESOURCE_ABUSE = [
    "{{ range(10**9)|list|length }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 10**9 }}",
    "{{ [1] * 10**9 }}",
    "{{ 10 ** 100000000 }}",
    "{% set n = 99999999 %}{{ 7 ** n }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ 'x'|center(999999999) }}",
    "{{ 'x'|indent(999999999, true) }}",
    "{{ '%999999999s'|format('x') }}",
    "{{ [1]|batch(999999999, 0)|list }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% for i in range(99999) %}{{ 'y' * 999999 }}{% endfor %}",
]


@pytest.mark.parametrize("attack", RESOURCE_ABUSE)
def test_resource_abuse_is_refused_quickly(tmp_path, attack):
    r = renderer(tmp_path, t={"channel": "sms", "body": attack})
    started = time.perf_counter()
    with pytest.raises(RenderError):
        r.render("t", context())
    assert time.perf_counter() - started < 5


def test_ordinary_arithmetic_and_formatting_still_work(tmp_path):
    body = "{{ '%.2f'|format(1234567.891) }} {{ '{:,}'.format(1234567) }} {{ 2 ** 10 }} {{ '-' * 5 }} {{ 'ab'|center(6) }}"
    r = renderer(tmp_path, t={"channel": "sms", "body": body})
    assert r.render("t", context())["body"] == "1234567.89 1,234,567 1024 -----   ab  "


HOSTILE_NAMES = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "' onmouseover='alert(1)", "a&b<i>"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_customer_fields_are_escaped_in_html_and_amp_text_and_attributes(tmp_path, name):
    r = renderer(tmp_path, mail={"subject": "Hi {{ customer.first_name }}", "preheader": "For {{ customer.first_name }}",
                                 "mjml": "t/mail.mjml", "amp": "t/mail.amp.html"})
    parts = r.render("mail", context(name))
    for part in ("html", "amp"):
        assert "<script>alert" not in parts[part] and "<img src=x" not in parts[part] and "<i>" not in parts[part]
        assert "' onmouseover='" not in parts[part]
        assert "&lt;" in parts[part] or "&#39;" in parts[part] or "&#34;" in parts[part]
    assert f'alt="{name}"' not in parts["html"]  # the attribute value cannot be closed by the name
    assert parts["subject"] == f"Hi {name}"  # the subject is text: MIME encodes it, nothing renders it as HTML
    assert name in parts["text"]  # and the plain-text part shows the name as written


@pytest.mark.parametrize("newline", ["\r\n", "\n", "\r", "\u2028", "\x85"])
def test_a_line_break_in_a_field_cannot_add_a_header_through_the_subject(tmp_path, newline):
    r = renderer(tmp_path, mail={"subject": "Hi {{ customer.first_name }}", "preheader": "x", "mjml": "t/mail.mjml"})
    parts = r.render("mail", context(f"Anna{newline}Bcc: everyone@example.com"))
    assert parts["subject"] == "Hi Anna Bcc: everyone@example.com"
    assert not any(ch in parts["subject"] for ch in "\r\n\u2028\x85")


def test_a_missing_field_names_the_template_file_and_the_field(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t/mail.mjml").write_text(MJML.replace("Hello {{ customer.first_name }}", "Hello {{ customer.nickname }}"))
    r = MessageRenderer(SimpleNamespace(root=tmp_path, templates={"mail": Template(
        "mail", Location("templates.yaml", 3, 3), {"subject": "x", "preheader": "y", "mjml": "t/mail.mjml"}, channel="email",
        files=MappingProxyType({"mjml": tmp_path / "t/mail.mjml"}))}))
    with pytest.raises(RenderError) as raised:
        r.render("mail", context())
    assert raised.value.file == "t/mail.mjml" and "nickname" in str(raised.value)
