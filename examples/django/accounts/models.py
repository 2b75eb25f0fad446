from django.db import models


class Member(models.Model):
    email = models.EmailField(unique=True)
    joined_at = models.DateTimeField(auto_now_add=True)
    welcomed_at = models.DateTimeField(null=True, blank=True)  # set by the send_welcome task

    def __str__(self) -> str:
        return self.email
