"""Factories that create through the services, so tests see real events, history and preferences."""

import factory

from customers import services
from customers.actor import Actor


class CustomerFactory(factory.Factory):
    class Meta:
        model = dict

    email = factory.Sequence(lambda n: f"customer{n}@example.com")
    first_name = factory.Faker("first_name")
    last_name = factory.Faker("last_name")

    @classmethod
    def _create(cls, model_class, *args, actor=None, **kwargs):
        return services.customer_create(actor=actor or Actor.system("factory"), **kwargs)
