"""Field-by-field comparison of what a client sent (an OTLP protobuf request) with the rows the
lake holds for it, as read by an independent reader (pyarrow)."""

import base64
import datetime
import json

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def plain(v):
    """A nested AnyValue as the plain JSON the lake stores inside arrays and lists."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [plain(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: plain(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def sent_value(v):
    """(type tag, value) of an AnyValue as sent."""
    kind = v.WhichOneof("value")
    if kind is None:
        return ("empty", None)
    return {
        "string_value": lambda: (None, v.string_value),
        "bool_value": lambda: ("bool", v.bool_value),
        "int_value": lambda: ("int", v.int_value),
        "double_value": lambda: ("double", v.double_value),
        "bytes_value": lambda: ("bytes", base64.b64encode(v.bytes_value).decode()),
        "array_value": lambda: ("array", plain(v)),
        "kvlist_value": lambda: ("kvlist", plain(v)),
    }[kind]()


def stored_value(text, tag):
    """(type tag, value) of an attribute as stored: its text and its entry in *_attribute_types."""
    if tag is None:
        return (None, text)
    conv = {
        "bool": lambda t: {"true": True, "false": False}[t],
        "int": int,
        "double": float,
        "bytes": lambda t: t,
        "array": json.loads,
        "kvlist": json.loads,
        "empty": lambda t: None,
    }[tag]
    return (tag, conv(text))


def sent_attrs(kvs):
    return {kv.key: sent_value(kv.value) for kv in kvs}


def stored_attrs(values, types):
    values, types = dict(values), dict(types)
    return {k: stored_value(v, types.get(k)) for k, v in values.items()}


def hex_or_none(b):
    return b.hex() if b else None


def check_span(row, rs, ss, span, received_after_ns=0):
    """Assert that one lake row holds exactly one sent span with its resource and scope."""
    assert row["trace_id"] == span.trace_id.hex()
    assert row["span_id"] == span.span_id.hex()
    assert row["parent_span_id"] == hex_or_none(span.parent_span_id)
    assert row["trace_state"] == (span.trace_state or None)
    assert row["flags"] == span.flags
    assert row["name"] == span.name
    assert row["kind"] == KINDS[span.kind]
    assert row["start_time_unix_nano"] == span.start_time_unix_nano
    if span.end_time_unix_nano:
        assert row["end_time_unix_nano"] == span.end_time_unix_nano
        assert row["duration_ns"] == span.end_time_unix_nano - span.start_time_unix_nano
    else:
        assert row["end_time_unix_nano"] is None and row["duration_ns"] is None
    assert row["start_time"] == EPOCH + datetime.timedelta(microseconds=span.start_time_unix_nano // 1000)
    assert row["status_code"] == STATUS[span.status.code]
    assert row["status_message"] == (span.status.message or None)
    assert stored_attrs(row["attributes"], row["attribute_types"]) == sent_attrs(span.attributes)
    assert row["dropped_attributes_count"] == span.dropped_attributes_count
    assert row["dropped_events_count"] == span.dropped_events_count
    assert row["dropped_links_count"] == span.dropped_links_count
    assert len(row["events"]) == len(span.events)
    for got, ev in zip(row["events"], span.events):
        assert got["time_unix_nano"] == ev.time_unix_nano
        assert got["name"] == ev.name
        assert stored_attrs(got["attributes"], got["attribute_types"]) == sent_attrs(ev.attributes)
        assert got["dropped_attributes_count"] == ev.dropped_attributes_count
    assert len(row["links"]) == len(span.links)
    for got, ln in zip(row["links"], span.links):
        assert got["trace_id"] == ln.trace_id.hex()
        assert got["span_id"] == ln.span_id.hex()
        assert got["trace_state"] == (ln.trace_state or None)
        assert got["flags"] == ln.flags
        assert stored_attrs(got["attributes"], got["attribute_types"]) == sent_attrs(ln.attributes)
        assert got["dropped_attributes_count"] == ln.dropped_attributes_count
    res_attrs = sent_attrs(rs.resource.attributes)
    assert stored_attrs(row["resource_attributes"], row["resource_attribute_types"]) == res_attrs
    svc = res_attrs.get("service.name")
    assert row["service_name"] == (svc[1] if svc and svc[0] is None else None)
    assert row["resource_dropped_attributes_count"] == rs.resource.dropped_attributes_count
    assert row["resource_schema_url"] == (rs.schema_url or None)
    assert row["scope_name"] == (ss.scope.name or None)
    assert row["scope_version"] == (ss.scope.version or None)
    assert stored_attrs(row["scope_attributes"], row["scope_attribute_types"]) == sent_attrs(ss.scope.attributes)
    assert row["scope_dropped_attributes_count"] == ss.scope.dropped_attributes_count
    assert row["scope_schema_url"] == (ss.schema_url or None)
    assert row["ingest_time_unix_nano"] >= received_after_ns
    # the Hive partition is the span's start hour, in UTC
    start = datetime.datetime.fromtimestamp(span.start_time_unix_nano / 1e9, tz=datetime.timezone.utc)
    assert str(row["date"]) == start.strftime("%Y-%m-%d")
    assert int(row["hour"]) == start.hour


def check_lake(rows, request):
    """Every span of the request is in the lake exactly once, field by field."""
    by_id = {}
    for r in rows:
        key = (r["trace_id"], r["span_id"])
        assert key not in by_id, f"span {key} stored twice"
        by_id[key] = r
    sent = 0
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                sent += 1
                key = (span.trace_id.hex(), span.span_id.hex())
                assert key in by_id, f"span {span.name} {key} is missing from the lake"
                check_span(by_id[key], rs, ss, span)
    assert len(rows) == sent, f"{len(rows)} rows for {sent} spans sent"
