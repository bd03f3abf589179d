from django.apps import AppConfig


def _address_field():
    from addresses.api import AddressSerializer

    return AddressSerializer(read_only=True, allow_null=True)


class AddressesConfig(AppConfig):
    name = "addresses"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from addresses import selectors
        from customers.extensions import RepresentationField, register_representation_field

        # GET /customers/{id} shows the defaults (both from one query); customers never imports addresses.
        for name in selectors.DEFAULT_ADDRESS_FIELDS.values():
            register_representation_field(
                RepresentationField(
                    name=name,
                    make_field=_address_field,
                    load=selectors.default_addresses_by_field,
                    load_returns_all_fields=True,
                )
            )

        # The customer back-office: search and duplicate detection by postal code, the default shipping
        # address in exports, address changes in the customer page's recent history, merges.
        from customers.extensions import AddressLookup, register_address_lookup, register_history_source

        register_address_lookup(
            AddressLookup(
                search=selectors.customers_with_address_matching,
                postal_codes_of=selectors.postal_codes_of,
                customers_at=selectors.customers_at_postal_codes,
                export_join=selectors.EXPORT_JOIN,
                export_columns=selectors.EXPORT_COLUMNS,
            )
        )
        register_history_source(selectors.address_history)

        from addresses import merge

        merge.subscribe()
