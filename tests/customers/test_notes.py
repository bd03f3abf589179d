"""Notes: written through the services (admin and API alike), compliance notes fenced off in the queryset."""

import pytest

from customers import notes, services
from customers.actor import SCOPE_ADMIN, SCOPE_READ, SCOPE_WRITE, Actor
from customers.errors import Forbidden, InvalidStatusTransition, ValidationFailed
from customers.models import CustomerNote, OutboxEvent
from customers.roles import ADMINISTRATOR, COMPLIANCE, CUSTOMER_SERVICE, MARKETING
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db
ADMIN_SCOPES = [SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN]


def test_a_rep_adds_edits_and_pins_a_note_with_history_and_events(staff):
    customer = CustomerFactory()
    rep = staff(CUSTOMER_SERVICE, "rep1")
    actor = Actor.for_staff(rep)
    note = services.note_create(actor=actor, customer_id=customer.pk, text="  Called about a refund  ", kind="support")
    assert note.text == "Called about a refund" and note.author == rep and note.written_by == "staff:rep1"
    services.note_update(actor=actor, customer_id=customer.pk, note_id=note.pk, changes={"text": "Refund sent"})
    services.note_pin(actor=actor, customer_id=customer.pk, note_id=note.pk)
    note.refresh_from_db()
    assert note.is_pinned and note.text == "Refund sent"
    versions = list(CustomerNote.history.filter(id=note.pk).order_by("history_date"))
    assert [v.history_change_reason for v in versions] == ["note added", "changed: text", "pinned"]
    assert {v.history_user_id for v in versions} == {rep.pk}
    assert {v.history_actor for v in versions} == {"staff:rep1"}
    types = list(OutboxEvent.objects.filter(subject=str(customer.pk)).values_list("event_type", flat=True))
    assert types.count("customer.note.added.v1") == 1 and types.count("customer.note.updated.v1") == 2
    assert all("text" not in e.data for e in OutboxEvent.objects.filter(event_type__startswith="customer.note"))


def test_pinned_notes_come_first(staff):
    customer = CustomerFactory()
    actor = Actor.for_staff(staff(CUSTOMER_SERVICE))
    old_pinned = services.note_create(actor=actor, customer_id=customer.pk, text="VIP", is_pinned=True)
    first = services.note_create(actor=actor, customer_id=customer.pk, text="first")
    second = services.note_create(actor=actor, customer_id=customer.pk, text="second")
    assert list(notes.customer_notes(actor=actor, customer_id=customer.pk)) == [old_pinned, second, first]


def test_compliance_notes_are_only_for_compliance_and_administrators(staff):
    customer = CustomerFactory()
    compliance = Actor.for_staff(staff(COMPLIANCE))
    rep = Actor.for_staff(staff(CUSTOMER_SERVICE))
    marketing = Actor.for_staff(staff(MARKETING))
    administrator = Actor.for_staff(staff(ADMINISTRATOR))
    secret = services.note_create(actor=compliance, customer_id=customer.pk, text="Legal hold", kind="compliance")
    public = services.note_create(actor=rep, customer_id=customer.pk, text="Prefers email")
    assert set(notes.customer_notes(actor=compliance, customer_id=customer.pk)) == {secret, public}
    assert set(notes.customer_notes(actor=administrator, customer_id=customer.pk)) == {secret, public}
    assert list(notes.customer_notes(actor=rep, customer_id=customer.pk)) == [public]
    assert list(notes.customer_notes(actor=marketing, customer_id=customer.pk)) == [public]
    with pytest.raises(Forbidden):
        services.note_create(actor=rep, customer_id=customer.pk, text="x", kind="compliance")
    with pytest.raises(notes.NoteNotFound):  # invisible is not found
        services.note_update(actor=rep, customer_id=customer.pk, note_id=secret.pk, changes={"text": "x"})
    with pytest.raises(Forbidden):  # nor can a rep turn a note into a compliance note
        services.note_update(actor=rep, customer_id=customer.pk, note_id=public.pk, changes={"kind": "compliance"})


def test_validation_and_closed_customers(staff):
    customer = CustomerFactory()
    actor = Actor.for_staff(staff(CUSTOMER_SERVICE))
    with pytest.raises(ValidationFailed) as error:
        services.note_create(actor=actor, customer_id=customer.pk, text="   ")
    assert "text" in error.value.errors
    with pytest.raises(ValidationFailed):
        services.note_create(actor=actor, customer_id=customer.pk, text="x", kind="gossip")
    with pytest.raises(ValidationFailed):
        services.note_create(actor=actor, customer_id=customer.pk, text="x" * (notes.NOTE_MAX_LENGTH + 1))
    services.erase_customers_data([customer.pk])
    with pytest.raises(InvalidStatusTransition):
        services.note_create(actor=actor, customer_id=customer.pk, text="too late")


def test_delete_keeps_history_until_erasure_which_removes_notes_and_their_history(staff):
    customer = CustomerFactory()
    administrator = Actor.for_staff(staff(ADMINISTRATOR))
    note = services.note_create(actor=administrator, customer_id=customer.pk, text="Mentions Ann's divorce")
    services.note_delete(actor=administrator, customer_id=customer.pk, note_id=note.pk)
    assert not CustomerNote.objects.filter(pk=note.pk).exists()
    assert CustomerNote.history.filter(id=note.pk, history_type="-").exists()
    counts = services.erase_customers_data([customer.pk])
    assert counts["customers_historicalcustomernote"] == 2
    assert not CustomerNote.history.filter(customer_id=customer.pk).exists()


def test_notes_are_in_the_export(staff):
    customer = CustomerFactory()
    compliance = Actor.for_staff(staff(COMPLIANCE))
    services.note_create(actor=compliance, customer_id=customer.pk, text="Asked for all data", kind="compliance")
    exported = services.export_customer_data(customer.pk)
    assert [row["text"] for row in exported["notes"]] == ["Asked for all data"]
    assert "search" not in exported["notes"][0]
    assert len(exported["notes_history"]) == 1


def test_full_text_search_over_all_notes(staff):
    actor = Actor.for_staff(staff(CUSTOMER_SERVICE))
    ann, bob = CustomerFactory(), CustomerFactory()
    refund = services.note_create(actor=actor, customer_id=ann.pk, text="Customer asked for refunds twice")
    services.note_create(actor=actor, customer_id=bob.pk, text="Shipping address typo fixed")
    from django.contrib.postgres.search import SearchQuery

    found = CustomerNote.objects.filter(search=SearchQuery("refund", config="english"))
    assert list(found) == [refund]  # stemmed: refunds ~ refund


# ---------------------------------------------------------------- the API


def _url(customer, note=None):
    base = f"/api/v1/customers/{customer.pk}/notes"
    return f"{base}/{note}" if note is not None else base


def test_api_crud_needs_the_admin_scope(api_client):
    customer = CustomerFactory()
    service = api_client(ADMIN_SCOPES, subject="crm")
    created = service.post(_url(customer), {"text": "From the CRM", "kind": "sales", "is_pinned": True}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["text"] == "From the CRM" and body["is_pinned"] and body["written_by"] == "token:crm"
    note_id = body["id"]
    listed = service.get(_url(customer)).json()
    assert [note["id"] for note in listed["results"]] == [note_id]
    patched = service.patch(_url(customer, note_id), {"is_pinned": False}, format="json")
    assert patched.status_code == 200 and patched.json()["is_pinned"] is False
    assert service.patch(_url(customer, note_id), {"surprise": 1}, format="json").status_code == 400
    assert service.delete(_url(customer, note_id)).status_code == 204
    assert service.get(_url(customer, note_id)).status_code == 404

    read_write = api_client([SCOPE_READ, SCOPE_WRITE])
    assert read_write.get(_url(customer)).status_code == 403
    assert read_write.post(_url(customer), {"text": "x"}, format="json").status_code == 403


def test_api_customer_tokens_and_compliance_notes(api_client, staff):
    customer = CustomerFactory()
    services.note_create(
        actor=Actor.for_staff(staff(COMPLIANCE)), customer_id=customer.pk, text="Legal", kind="compliance"
    )
    own = api_client(ADMIN_SCOPES, customer=customer)
    assert own.get(_url(customer)).status_code in (403, 404)
    assert own.post(_url(customer), {"text": "mine"}, format="json").status_code in (403, 404)
    service = api_client(ADMIN_SCOPES)
    assert service.get(_url(customer)).json()["results"] == []  # services never see compliance notes
    refused = service.post(_url(customer), {"text": "x", "kind": "compliance"}, format="json")
    assert refused.status_code == 403
    assert service.get(f"/api/v1/customers/{CustomerFactory().pk}/notes/999999").status_code == 404


def test_note_history_screens_keep_compliance_notes_from_reps(client, staff):
    """The history views read the history table: the compliance rule must hold there too (list and version)."""
    customer = CustomerFactory()
    compliance = staff(COMPLIANCE)
    officer = Actor.for_staff(compliance)
    secret = services.note_create(actor=officer, customer_id=customer.pk, text="Subpoena 77", kind="compliance")
    services.note_update(actor=officer, customer_id=customer.pk, note_id=secret.pk, changes={"text": "Subpoena 78"})
    # a note that was general once and is a compliance note now: its old versions are compliance material too
    turned = services.note_create(actor=officer, customer_id=customer.pk, text="Court order draft")
    services.note_update(actor=officer, customer_id=customer.pk, note_id=turned.pk, changes={"kind": "compliance"})
    # a deleted compliance note: the history table still holds it
    gone = services.note_create(actor=officer, customer_id=customer.pk, text="Old hold 5", kind="compliance")
    services.note_delete(actor=officer, customer_id=customer.pk, note_id=gone.pk)
    public = services.note_create(actor=officer, customer_id=customer.pk, text="Prefers phone")

    def urls(note):
        base = f"/admin/customers/customernote/{note.pk}/history/"
        versions = CustomerNote.history.filter(id=note.pk).values_list("history_id", flat=True)
        return [base, *(f"{base}{version}/" for version in versions)]

    client.force_login(staff(CUSTOMER_SERVICE))
    for note, words in ((secret, "Subpoena"), (turned, "Court order"), (gone, "Old hold")):
        for url in urls(note):
            response = client.get(url)
            assert response.status_code == 404, url
            assert words not in response.content.decode()
    for url in urls(public):
        assert client.get(url).status_code == 200
    assert "Prefers phone" in client.get(urls(public)[1]).content.decode()
    rep_page = client.get(f"/admin/customers/customer/{customer.pk}/change/").content.decode()
    assert rep_page.count('class="history-entry"') > 0
    visible_note_rows = notes.note_history_visible_to(Actor.for_staff(staff(CUSTOMER_SERVICE, "rep2")))
    assert set(visible_note_rows.filter(customer_id=customer.pk).values_list("id", flat=True)) == {public.pk}

    client.force_login(compliance)
    for note in (secret, turned):
        assert client.get(urls(note)[0]).status_code == 200
    versions = "".join(client.get(url).content.decode() for url in urls(secret)[1:])
    assert "Subpoena 77" in versions and "Subpoena 78" in versions
    assert client.get(urls(gone)[0]).status_code == 200  # a deleted note's history, for those who may see it
