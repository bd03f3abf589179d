"""Back-office for compliance: purposes and policy versions (only the Compliance group may edit
them), the consent record (read-only, filterable, CSV export for audits), and each customer's
consent on the customer page (read-only). Every write goes through `consent.services`.
"""

from consent.admin import customer_page, export, policies, records

__all__ = ["customer_page", "export", "policies", "records"]
