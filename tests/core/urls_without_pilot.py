"""A URL configuration without the pilot protocol (tests of the pilot lane's resolution)."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
