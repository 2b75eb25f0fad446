import json
from functools import partial

from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Member
from accounts.tasks import send_welcome


@require_POST
def join(request: HttpRequest) -> JsonResponse:
    """Add members, ``{"emails": [...]}``, all or none, and welcome each one by a task."""
    try:
        emails = json.loads(request.body)["emails"]
    except (ValueError, KeyError, TypeError):
        emails = None
    if not isinstance(emails, list) or not emails or not all(isinstance(e, str) and "@" in e for e in emails):
        return JsonResponse({"error": 'send {"emails": ["ada@example.com", ...]}'}, status=400)
    try:
        with transaction.atomic():
            members = []
            for email in emails:
                member = Member.objects.create(email=email)
                members.append(member)
                # Enqueued only once the transaction commits: if a later address fails, the whole
                # block rolls back and no task is sent for a member that does not exist.
                transaction.on_commit(partial(send_welcome.enqueue, member.pk))
    except IntegrityError:
        return JsonResponse({"error": "an address is taken already; nobody was added"}, status=409)
    return JsonResponse({"members": [m.pk for m in members]}, status=201)


@require_GET
def member(request: HttpRequest, pk: int) -> JsonResponse:
    found = get_object_or_404(Member, pk=pk)
    return JsonResponse({"email": found.email, "welcomed_at": found.welcomed_at})
