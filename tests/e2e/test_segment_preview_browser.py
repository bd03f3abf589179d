"""The segment rule editor in a real browser: the live preview counts what the typed rules select,
shows a sample, and says what is wrong with rules that are not valid yet."""

from decimal import Decimal

import pytest

from customers.roles import MARKETING
from tests.addresses.conftest import migrated_data_restored  # noqa: F401  (module fixture)
from tests.e2e.browser import in_a_browser, screenshot
from tests.e2e.test_backoffice_flow import _staff
from tests.segments.conftest import make_customer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
    pytest.mark.usefixtures("migrated_data_restored"),
]

RESULT = "#segment-preview-result"


def test_the_rule_editor_previews_the_count_a_sample_and_the_errors(live_server, django_user_model):
    _staff(django_user_model, "marketer-e2e", MARKETING)
    big = [make_customer(metrics={"total_spent": Decimal("900.00")}) for _ in range(3)]
    make_customer(metrics={"total_spent": Decimal("10.00")})

    def typed(page, text: str, expect: str) -> str:
        page.fill("textarea.segment-rules", text)  # an input event: the preview runs 0.5 s later
        page.wait_for_function(
            "([selector, expect]) => document.querySelector(selector).textContent.includes(expect)",
            arg=[RESULT, expect],
        )
        return page.text_content(RESULT)

    def scenario(page, url, found):
        page.goto(f"{url}/admin/segments/segment/add/")
        spenders = '{"all": [{"field": "total_spent", "op": "gte", "value": 500}]}'
        found["count"] = typed(page, spenders, "match now")
        found["sample"] = sorted(page.locator("#segment-preview-sample li").all_text_contents())
        screenshot(page, "segment-preview")
        found["unknown field"] = typed(page, '{"all": [{"field": "shoe_size", "op": "eq", "value": 9}]}', "shoe_size")
        found["not json"] = typed(page, '{"all": [', "Not valid JSON yet")

    found = in_a_browser(live_server, "marketer-e2e", scenario)
    assert found["count"] == "3 customer(s) match now."
    assert found["sample"] == sorted(f"{c.customer_number} {c.first_name} {c.last_name}".strip() for c in big)
    assert "rules" in found["unknown field"] and "shoe_size" in found["unknown field"]
    assert found["not json"].startswith("Not valid JSON yet")
