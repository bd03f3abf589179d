"""`{% customer_timeline customer %}`: the latest activity of a customer (the customer page itself now
renders a paginated timeline from CustomerAdmin.customer_page_timeline, in the same template)."""

from django import template
from django.urls import reverse

from customers.activity import customer_timeline as timeline_page

register = template.Library()


@register.inclusion_tag("admin/customers/customer/timeline.html", takes_context=True)
def customer_timeline(context, customer, limit: int = 50):
    request = context.get("request")
    page = timeline_page(customer_id=customer.pk, page_size=limit)
    full_url = None
    if request is not None and request.user.has_perm("customers.view_customeractivity"):
        full_url = f"{reverse('admin:customers_customeractivity_changelist')}?customer__id__exact={customer.pk}"
    timeline = {"entries": page.results, "more": page.next is not None, "full_url": full_url, "limit": limit}
    return {"timeline": {**timeline, "paged": False, "older_url": "", "newer_url": "", "newest_url": ""}}
