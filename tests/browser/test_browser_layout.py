"""The page fits a phone, follows the system colour scheme and can be used by keyboard and screen reader."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PageOpener
from tests.integration.conftest import EdgeServer

pytestmark = pytest.mark.integration

BACKGROUND = "getComputedStyle(document.body).backgroundColor"
OVERFLOW = "document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_phone_width_has_no_sideways_scrolling(open_page: PageOpener, gateway: EdgeServer) -> None:
    phone = {"viewport": {"width": 360, "height": 740}, "device_scale_factor": 2, "is_mobile": True}
    remote = open_page(gateway.url, remote_ip="192.0.2.40", **phone)
    remote.expect_state("token-needed")
    assert remote.page.evaluate(OVERFLOW) <= 0
    admin = open_page(gateway.url, **phone)
    admin.expect_state("connected")
    expect(admin.page.get_by_test_id("admin-panel")).to_be_visible()
    assert admin.page.evaluate(OVERFLOW) <= 0
    admin.shoot("admin-phone")


def test_dark_and_light_schemes_follow_the_system(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    light = open_page(gateway.url, remote_ip="192.0.2.41", color_scheme="light")
    dark = open_page(gateway.url, remote_ip="192.0.2.42", color_scheme="dark")
    light.expect_state("token-needed")
    dark.expect_state("token-needed")
    assert light.page.evaluate(BACKGROUND) != dark.page.evaluate(BACKGROUND)
    dark.shoot("token-needed-dark")


def test_every_form_control_has_a_label_and_state_changes_are_announced(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = open_page(gateway.url, remote_ip="192.0.2.43")
    remote.expect_state("token-needed")
    page = remote.page
    unlabeled = page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
              .filter((control) => control.labels.length === 0 && !control.getAttribute('aria-label'))
              .map((control) => control.id || control.name)"""
    )
    assert unlabeled == []
    announcer = page.get_by_test_id("announcer")
    expect(announcer).to_have_attribute("aria-live", "polite")
    expect(announcer).to_contain_text("Gateway token needed")


def test_token_form_works_from_the_keyboard_alone(
    open_page: PageOpener, gateway: EdgeServer
) -> None:
    remote = open_page(gateway.url, remote_ip="192.0.2.44")
    remote.expect_state("token-needed")
    page = remote.page
    expect(page.get_by_label("Gateway token", exact=True)).to_be_focused()
    page.keyboard.type("a-token-that-is-wrong")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("close-reason-message")).to_have_attribute(
        "data-close-reason", "unauthorized: gateway token mismatch"
    )
    expect(page.get_by_label("Gateway token", exact=True)).to_be_focused()
