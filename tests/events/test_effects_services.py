"""The inbound write use-cases follow the service conventions: `<entity>_<action>`, keyword-only, an actor."""

import inspect
import json

import pytest

from customers.actor import Actor
from customers.messaging import effects, inbound
from customers.models import Customer, OutboxEvent
from tests.events.conftest import envelope
from tests.events.test_inbound import order

USE_CASES = [
    "customer_orders_apply",
    "customer_support_cases_apply",
    "customer_loyalty_points_apply",
    "customer_identity_link",
    "customer_identity_delete",
    "customer_metrics_recompute",
]


@pytest.mark.parametrize("name", USE_CASES)
def test_each_use_case_takes_keyword_only_arguments_with_the_actor(name):
    parameters = inspect.signature(getattr(effects, name)).parameters
    assert "actor" in parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


def test_the_batch_families_are_the_use_cases():
    assert {apply.__name__ for apply, _ in inbound.FAMILIES.values()} <= set(USE_CASES)
    assert not [name for name in vars(effects) if name.startswith("apply_")]  # the old unnamed entry points


@pytest.mark.django_db
def test_the_actor_given_to_a_batch_is_the_one_its_events_and_history_carry():
    actor = Actor.system("replay-test")
    registration = envelope(
        "identity.user.registered.v1", {"user_id": "u-act", "email": "act@example.com"}, source="identity"
    )
    messages = [inbound.parse(json.dumps(registration)), inbound.parse(json.dumps(order("created", "u-act")))]
    assert inbound.apply_batch(messages, actor=actor).applied == 2
    customer = Customer.objects.get(external_id="u-act")
    recorded = OutboxEvent.objects.filter(subject=str(customer.pk))
    assert {e.event_type for e in recorded} >= {"customer.created.v1", "customer.metrics.updated.v1"}
    assert {e.metadata.get("actor") for e in recorded} == {actor.label}

    # Without one, the inbound events' own system actor.
    inbound.apply_batch([inbound.parse(json.dumps(order("created", "u-act", "o-2")))])
    latest = OutboxEvent.objects.filter(subject=str(customer.pk)).order_by("-sequence").first()
    assert latest.metadata["actor"] == effects.INBOUND_ACTOR.label
