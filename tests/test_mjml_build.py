"""MJML compiled once per template: mj-include expanded safely (relative to
the including file, inside the project, cycles and missing files located),
and <mj-style inline="inline"> inlined with the Jinja left intact."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from campaignctl.mjml_build import MjmlBuildError, build_html
from campaignctl.templates import _jinja_error, check_template, environment

PAGE = """<mjml>
  <mj-head><mj-title>{{ subject }}</mj-title></mj-head>
  <mj-body>
    <mj-section><mj-column>
      {include}
    </mj-column></mj-section>
  </mj-body>
</mjml>
"""


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def build(root: Path, name: str = "templates/mail.mjml") -> str:
    return build_html(root / name, root, ".", _jinja_error)


def problems(root: Path, name: str = "templates/mail.mjml") -> list[str]:
    with pytest.raises(MjmlBuildError) as raised:
        build(root, name)
    return [str(d) for d in raised.value.diagnostics]


def test_includes_resolve_relative_to_the_including_file_and_nest(tmp_path):
    write(tmp_path, {
        "templates/mail.mjml": PAGE.replace("{include}", '<mj-include path="parts/footer.mjml" />'),
        "templates/parts/footer.mjml": '<mj-text>Footer {{ customer.first_name }}</mj-text>\n<mj-include path="../shared/legal.mjml" />',
        "templates/shared/legal.mjml": "<mjml><mj-head><mj-attributes><mj-text color=\"#123456\" /></mj-attributes></mj-head>"
                                       "<mj-body><mj-text>Legal small print</mj-text></mj-body></mjml>",
    })
    html = build(tmp_path)
    assert "Footer {{ customer.first_name }}" in html and "Legal small print" in html
    assert "#123456" in html  # the included document's head joined ours
    assert environment(True).from_string(html).render(subject="S", customer={"first_name": "Anna"}).count("Footer Anna") == 1


@pytest.mark.parametrize("path, message", [
    ("../../secrets.mjml", "leaves the project"),
    ("/etc/passwd", "is absolute"),
    ("file:///etc/passwd", "is absolute"),
    ("nothing_here.mjml", "does not exist"),
    ("", "has no path"),
])
def test_unsafe_or_missing_includes_are_refused_at_the_include(tmp_path, path, message):
    write(tmp_path, {"templates/mail.mjml": PAGE.replace("{include}", f'<mj-include path="{path}" />')})
    (tmp_path.parent / "secrets.mjml").write_text("<mj-text>secret</mj-text>")
    found = problems(tmp_path)
    assert len(found) == 1 and found[0].startswith("templates/mail.mjml:5:7: mj-include:") and message in found[0]


def test_a_link_out_of_the_project_is_refused(tmp_path):
    outside = tmp_path / "outside.mjml"
    outside.write_text("<mj-text>secret</mj-text>")
    root = tmp_path / "project"
    write(root, {"templates/mail.mjml": PAGE.replace("{include}", '<mj-include path="link.mjml" />')})
    os.symlink(outside, root / "templates/link.mjml")
    found = problems(root)
    assert len(found) == 1 and "link to a file outside the project" in found[0]


def test_an_include_cycle_is_reported_where_it_closes(tmp_path):
    write(tmp_path, {
        "templates/mail.mjml": PAGE.replace("{include}", '<mj-include path="a.mjml" />'),
        "templates/a.mjml": '<mj-text>A</mj-text>\n<mj-include path="b.mjml" />',
        "templates/b.mjml": '<mj-text>B</mj-text>\n\n<mj-include path="./a.mjml" />',
    })
    found = problems(tmp_path)
    assert found == ["templates/b.mjml:3:1: mj-include: mj-include cycle: templates/a.mjml -> templates/b.mjml -> templates/a.mjml "
                     "(remove one of the includes so no file includes itself)"]


def test_validate_reports_include_and_jinja_problems_in_the_included_file(tmp_path):
    write(tmp_path, {
        "templates/mail.mjml": PAGE.replace("{include}", '<mj-include path="part.mjml" />\n<mj-include path="gone.mjml" />'),
        "templates/part.mjml": "<mj-text>\nHi {{ customer.first_name }</mj-text>",
    })
    found = [str(d) for d in check_template({"channel": "email", "subject": "x", "mjml": "templates/mail.mjml"}, tmp_path, "shop")]
    assert any(line.startswith("shop/templates/mail.mjml:6:1: mj-include: mj-include file 'gone.mjml' does not exist") for line in found)
    assert any(line.startswith("shop/templates/part.mjml:2:1: mjml: template does not compile") for line in found)


def test_css_and_html_includes(tmp_path):
    write(tmp_path, {
        "templates/mail.mjml": PAGE.replace("{include}", '<mj-include path="brand.css" type="css" css-inline="inline" />'
                                                       '<mj-include path="banner.html" type="html" />'
                                                       '<mj-text css-class="brand">Brand</mj-text>'),
        "templates/brand.css": ".brand div { color: #c0572b !important; letter-spacing: 2px; }",
        "templates/banner.html": '<p class="banner">{{ customer.first_name }}</p>',
    })
    html = build(tmp_path)
    assert re.search(r'<div style="letter-spacing: 2px;[^"]*color: #c0572b !important"[^>]*>Brand</div>', html)
    assert '<p class="banner">{{ customer.first_name }}</p>' in html


def test_inline_styles_are_inlined_once_and_the_jinja_survives(tmp_path):
    write(tmp_path, {"templates/mail.mjml": """<mjml>
  <mj-head><mj-title>{{ subject }}</mj-title>
    <mj-style inline="inline">.price div { color: #c0572b !important; letter-spacing: 1px; }</mj-style>
    <mj-style>.keep-me { color: blue; }</mj-style>
  </mj-head>
  <mj-body><mj-section><mj-column>
    <mj-raw>{% if products|length > 1 %}</mj-raw>
    <mj-text css-class="price">{{ products|length }} items &amp; more</mj-text>
    <mj-raw>{% endif %}</mj-raw>
    <mj-button href="{{ links.cart }}&amp;from=mail" css-class="price">Go</mj-button>
    <mj-image src="{{ p.image_url if p else 'https://x.example/a.png' }}" alt="{{ name or 'x' }}" />
  </mj-column></mj-section></mj-body>
</mjml>
"""})
    html = build(tmp_path)
    assert "{% if products|length > 1 %}" in html and "{% endif %}" in html  # not escaped, not moved out of the table
    assert html.index("{% if products|length > 1 %}") < html.index("items") < html.index("{% endif %}")
    assert re.search(r'style="letter-spacing: 1px;[^"]*color: #c0572b !important', html) and ".keep-me" in html
    assert 'inline="inline"' not in html and ".price div" not in html  # inlined, not left as a style block
    assert "<title>{{ subject }}</title>" in html and 'href="{{ links.cart }}' in html
    rendered = environment(True).from_string(html).render(
        subject="Sale", products=[1, 2], links={"cart": "https://l.example/c"}, p=None, name=None)
    assert "<title>Sale</title>" in rendered and "2 items &amp; more" in rendered


def test_jinja_inside_an_inline_style_is_refused(tmp_path):
    write(tmp_path, {"templates/mail.mjml": PAGE.replace("<mj-title>{{ subject }}</mj-title>",
                                                         '<mj-style inline="inline">.a { color: {{ colour }}; }</mj-style>')
                                                .replace("{include}", "<mj-text>x</mj-text>")})
    found = problems(tmp_path)
    assert len(found) == 1 and "Jinja inside <mj-style inline=" in found[0]


def test_the_text_part_made_once_per_template_matches_the_text_of_the_rendered_html():
    from campaignctl.project import load_project
    from campaignctl.templates import Links, MessageRenderer, html_to_text

    project = load_project(Path(__file__).resolve().parents[1] / "campaigns")
    renderer = MessageRenderer(project)
    products = [{"name": f"Plate <{i}> & cup", "url": f"https://uyut.example/p/{i}", "image_url": "https://s.example/p.png",
                 "price": 390 + i} for i in range(3)]
    for first_name, listed in (("Анна", products), ("Tom & <Jerry>", [])):
        context = {"customer": {"first_name": first_name, "customer_id": 1}, "links": Links("k/1"), "offer": None,
                   "products": listed, "recommendations": listed[:1], "category": None, "order": None}
        parts = renderer.render("cart_email", context)
        assert getattr(renderer.parts("cart_email")["text"], "campaignctl_derived", False)
        assert parts["text"] == html_to_text(parts["html"])
        assert first_name in parts["text"]
