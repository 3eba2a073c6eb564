"""``study.bench.services``: the loopback servers the bench and the tests use are the real programs, with the
behaviour the study relies on (S3's conditional create; a Postgres database per study, password from PGPASSWORD)."""

import botocore.exceptions
import pytest


def test_the_s3_server_refuses_a_second_create_of_the_same_key(s3):
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="services/a", Body=b"1", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.put_object(Bucket=s3.bucket, Key="services/a", Body=b"2", IfNoneMatch="*")
    assert err.value.response["Error"]["Code"] == "PreconditionFailed"
    assert s3.keys("services/") == ["services/a"]
    assert client.get_object(Bucket=s3.bucket, Key="services/a")["Body"].read() == b"1"


def test_a_postgres_database_is_reachable_with_the_password_from_the_environment(postgres, monkeypatch):
    import sqlalchemy

    url = postgres.database("services_check")
    assert postgres.password not in url  # a study's config never holds a password
    monkeypatch.setenv("PGPASSWORD", postgres.password)
    with sqlalchemy.create_engine(url).connect() as connection:
        assert connection.execute(sqlalchemy.text("select current_database()")).scalar() == "services_check"
