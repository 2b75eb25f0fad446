"""Tasks of the accounts app (found by mysite/fastq_app.py; served by ``fastq-supervisor``)."""
from django.core.mail import send_mail
from django.utils import timezone
from mysite.fastq_app import app

from accounts.models import Member


@app.task(name="accounts:welcome", queue="emails", max_retry=10)
def send_welcome(member_id: int) -> str:
    """Mail a new member and note when. A plain ``def``: the ORM runs in a worker thread."""
    member = Member.objects.get(pk=member_id)  # enqueued on commit: the row is there
    send_mail("Welcome!", f"Hello {member.email}, thanks for joining.", None, [member.email])
    Member.objects.filter(pk=member.pk).update(welcomed_at=timezone.now())
    return member.email
