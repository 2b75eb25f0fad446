"""The welcome task is enqueued when the transaction commits, and only then.

``python manage.py test`` with a Redis server at ``FASTQ_REDIS_URL``: the tests empty the
``emails`` queue of that server and run its tasks with an in-process worker.
"""
from functools import partial

from django.conf import settings
from django.core import mail
from django.db import transaction
from django.test import TransactionTestCase
from mysite.fastq_app import app

import fastq
from accounts.models import Member
from accounts.tasks import send_welcome
from fastq.testing import WorkerHarness


class WelcomeOnCommitTests(TransactionTestCase):  # real commits: on_commit callbacks run (or not)
    def setUp(self):
        self.inspector = fastq.Inspector(settings.FASTQ_REDIS_URL)
        self.addCleanup(self.inspector.close)
        self.addCleanup(app.close)
        if "emails" in self.inspector.queues():
            self.inspector.delete_queue("emails", force=True)

    def queued(self):
        """Tasks waiting in the emails queue: {task ID: payload}."""
        if "emails" not in self.inspector.queues():
            return {}
        return {t.id: t.payload for t in self.inspector.list_pending_tasks("emails")}

    def drain(self):
        """Run the queued welcome tasks with a real worker, in this process."""
        return WorkerHarness(app, settings.FASTQ_REDIS_URL).drain("emails", timeout=20)

    def test_members_who_joined_get_their_welcome_task_once_committed(self):
        response = self.client.post("/members/", {"emails": ["ada@example.com", "grace@example.com"]},
                                    content_type="application/json")
        self.assertEqual(response.status_code, 201)
        ada, grace = response.json()["members"]
        self.assertEqual(sorted(self.queued().values()),
                         sorted([b'{"member_id":%d}' % ada, b'{"member_id":%d}' % grace]))

        result = self.drain()
        self.assertEqual(len(result.succeeded), 2)
        self.assertEqual(sorted(m.to[0] for m in mail.outbox), ["ada@example.com", "grace@example.com"])
        self.assertFalse(Member.objects.filter(welcomed_at=None).exists())
        self.assertIsNotNone(self.client.get(f"/members/{ada}/").json()["welcomed_at"])

    def test_a_join_that_rolls_back_enqueues_nothing(self):
        Member.objects.create(email="taken@example.com")
        response = self.client.post("/members/", {"emails": ["new@example.com", "taken@example.com"]},
                                    content_type="application/json")
        self.assertEqual(response.status_code, 409)
        self.assertFalse(Member.objects.filter(email="new@example.com").exists())
        self.assertEqual(self.queued(), {})  # new@'s task was registered, then dropped with the rollback

    def test_on_commit_in_code_of_your_own(self):
        with self.assertRaises(RuntimeError):
            with transaction.atomic():
                gone = Member.objects.create(email="gone@example.com")
                transaction.on_commit(partial(send_welcome.enqueue, gone.pk))
                raise RuntimeError("something after the insert failed")
        self.assertEqual(self.queued(), {})

        with transaction.atomic():
            kept = Member.objects.create(email="kept@example.com")
            transaction.on_commit(partial(send_welcome.enqueue, kept.pk))
            self.assertEqual(self.queued(), {})  # not before the commit
        queued = self.queued()
        self.assertEqual(list(queued.values()), [b'{"member_id":%d}' % kept.pk])
        self.assertEqual(self.drain().succeeded, list(queued))
        kept.refresh_from_db()
        self.assertIsNotNone(kept.welcomed_at)
