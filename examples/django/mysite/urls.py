from accounts import views
from django.urls import path

urlpatterns = [
    path("members/", views.join, name="join"),
    path("members/<int:pk>/", views.member, name="member"),
]
