"""Signs requests with botocore's own SigV4 signer and prints them as JSON, the test data of
dispatcher/tests/sigv4_botocore.rs (a cross-check of Squall's verifier against botocore's
signer).

Regenerate from the repository root with the Python that scripts/install-aws-clients prints:

    "$(scripts/install-aws-clients | tail -n 1)" dispatcher/tests/data/sigv4_botocore.py \
        > dispatcher/tests/data/sigv4_botocore.json

The credentials and the signing time are fixed; the Lambda client's requests also carry
botocore's random `amz-sdk-invocation-id`, so a new run differs in those values and their
signatures, and every run's output is equally valid test data.
"""

import base64
import datetime
import json
import sys
from unittest import mock
from urllib.parse import urlsplit

import botocore
import botocore.auth
import botocore.session
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ACCESS_KEY = "AKIDSQUALLEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "eu-west-1"
ENDPOINT = "http://127.0.0.1:8080"
SIGNED_AT = datetime.datetime(2026, 12, 1, 12, 0, 0)


class Captured(Exception):
    """Stops a client call once its signed request is captured, before anything is sent."""


def record(name, prepared):
    """A signed request as the dispatcher would receive it: the raw path and query, every
    header (with the Host the HTTP client adds) and the body."""
    url = urlsplit(prepared.url)
    headers = [[k, v if isinstance(v, str) else v.decode()] for k, v in prepared.headers.items()]
    if not any(k.lower() == "host" for k, _ in headers):
        headers.append(["Host", url.netloc])
    body = prepared.body or b""
    if isinstance(body, str):
        body = body.encode()
    elif not isinstance(body, bytes):
        body = body.read()
    amz_date = next(v for k, v in headers if k.lower() == "x-amz-date")
    return {
        "name": name,
        "access_key": ACCESS_KEY,
        "secret": SECRET,
        "amz_date": amz_date,
        "method": prepared.method,
        "path": url.path,
        "query": url.query,
        "headers": headers,
        "body_base64": base64.b64encode(body).decode(),
    }


def lambda_client_requests():
    """Requests made by botocore's Lambda client itself, captured before they are sent."""
    session = botocore.session.get_session()
    client = session.create_client(
        "lambda",
        region_name=REGION,
        endpoint_url=ENDPOINT,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 0}),
    )
    captured = []

    def capture(request, **_):
        captured.append(request)
        raise Captured()

    client.meta.events.register("before-send.lambda.*", capture)
    calls = [
        ("lambda invoke", lambda: client.invoke(
            FunctionName="hello", Payload=b'{"name":"botocore"}')),
        ("lambda invoke with a qualified name, tail logs and a client context", lambda: client.invoke(
            FunctionName="hello:live",
            InvocationType="RequestResponse",
            LogType="Tail",
            ClientContext=base64.b64encode(b'{"custom":{"who":"botocore"}}').decode(),
            Payload=b'{"text": "caf\xc3\xa9 \xe2\x98\x95"}')),
        ("lambda invoke, asynchronous, with a qualifier and a binary payload", lambda: client.invoke(
            FunctionName="hello", InvocationType="Event", Qualifier="$LATEST",
            Payload=bytes(range(256)))),
        ("lambda invoke, dry run, empty payload", lambda: client.invoke(
            FunctionName="hello", InvocationType="DryRun")),
        ("lambda get function with a qualifier", lambda: client.get_function(
            FunctionName="hello", Qualifier="7")),
        ("lambda list functions with a marker", lambda: client.list_functions(
            Marker="a b/c+d=e&f", MaxItems=5)),
    ]
    out = []
    for name, call in calls:
        try:
            call()
        except Captured:
            out.append(record(name, captured[-1]))
    return out


def signer_requests():
    """Requests built by hand and signed with botocore's SigV4Auth for the lambda service."""
    signer = botocore.auth.SigV4Auth(Credentials(ACCESS_KEY, SECRET), "lambda", REGION)
    cases = [
        ("GET without a body or query", "GET", "/2015-03-31/functions", None, {}, b""),
        ("PUT with a query given as parameters and extra headers", "PUT",
         "/2015-03-31/functions/hello/configuration",
         {"Qualifier": "live", "z": "last", "a": "x:y/z", "empty": ""},
         {"Content-Type": "application/json", "X-Custom": "  two   spaces  ", "X-Amz-Meta": "1"},
         b'{"Timeout": 30}'),
        ("DELETE of a path with characters to encode", "DELETE",
         "/2015-03-31/functions/hello%3Alive/aliases/caf%C3%A9", None, {}, b""),
        ("POST with a query already in the path and a text body", "POST",
         "/2015-03-31/functions/hello/invocations?Qualifier=%24LATEST&b=2&a=1", None,
         {"X-Amz-Invocation-Type": "Event"}, b"plain text, not JSON"),
    ]
    out = []
    for name, method, path, params, headers, body in cases:
        request = AWSRequest(method=method, url=ENDPOINT + path, params=params, headers=headers,
                             data=body)
        signer.add_auth(request)
        out.append(record(name, request.prepare()))
    return out


def main():
    with mock.patch.object(botocore.auth, "get_current_datetime", return_value=SIGNED_AT):
        requests = lambda_client_requests() + signer_requests()
    json.dump({"botocore": botocore.__version__, "requests": requests}, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
