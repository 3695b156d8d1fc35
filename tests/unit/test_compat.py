"""wokkel imports through tigasepy.compat on current Twisted, without deprecation warnings."""

from __future__ import annotations

import warnings


def test_data_form_round_trip_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        from tigasepy.compat import data_form

        form = data_form.Form("form", formNamespace="urn:example")
        form.addField(data_form.Field("jid-single", var="who", required=True, values=["a@example.org"]))
        form.addField(data_form.Field("list-single", var="n", options={"1": "one"}))
        parsed = data_form.Form.fromElement(form.toElement())
        parsed.typeCheck()
    assert parsed.formNamespace == "urn:example"
    assert parsed["who"].full() == "a@example.org"


def test_removed_twisted_names_are_provided():
    import twisted.python.compat as compat

    import tigasepy.compat  # noqa: F401

    assert compat._PY3 is True
