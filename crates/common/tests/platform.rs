//! The platform pieces every server relies on, exercised for real: an ephemeral PostgreSQL,
//! a gRPC server on port 0 with health and reflection, the service token, and graceful
//! shutdown on SIGTERM.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use tenantry_common::{
    CancellationToken, Secret,
    db::{self, DbSettings},
    grpc::{self, ServerSettings, Services},
    testing,
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

fn settings(token: Option<&str>) -> ServerSettings {
    ServerSettings {
        tls: None,
        service_token: token.map(Secret::new),
        request_timeout: Duration::from_secs(10),
        concurrency_limit: 64,
        max_message_bytes: 4 << 20,
        shutdown_grace: Duration::from_secs(10),
    }
}

async fn start(
    token: Option<&str>,
) -> (
    String,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), grpc::ServeError>>,
) {
    let listener = grpc::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = {
        let shutdown = shutdown.clone();
        let settings = settings(token);
        tokio::spawn(async move {
            grpc::serve(&settings, listener, Services::new(), &[], shutdown).await
        })
    };
    (url, shutdown, server)
}

async fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn list_services() -> ServerReflectionRequest {
    ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    }
}

fn service_names(response: Option<MessageResponse>) -> Vec<String> {
    match response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

#[tokio::test]
async fn server_on_port_zero_answers_health_and_reflection() {
    let (url, shutdown, server) = start(None).await;
    let channel = channel(&url).await;

    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);

    let mut reflection = ServerReflectionClient::new(channel);
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([list_services()]))
        .await
        .unwrap()
        .into_inner();
    let names = service_names(answers.next().await.unwrap().unwrap().message_response);
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.reflection.v1.ServerReflection".to_owned()),
        "{names:?}"
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// The official Python reflection client (grpcio-reflection) and other common tools ask for
/// `grpc.reflection.v1alpha` only: a v1alpha client lists the services and gets the file that
/// defines one, from which it can build requests.
#[tokio::test]
async fn reflection_v1alpha_lists_services_and_serves_their_descriptors() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaRequest,
        server_reflection_client::ServerReflectionClient as AlphaClient,
        server_reflection_request::MessageRequest as AlphaMessageRequest,
        server_reflection_response::MessageResponse as AlphaMessageResponse,
    };

    let (url, shutdown, server) = start(None).await;
    let mut client = AlphaClient::new(channel(&url).await);
    let requests = [
        AlphaRequest {
            host: String::new(),
            message_request: Some(AlphaMessageRequest::ListServices(String::new())),
        },
        AlphaRequest {
            host: String::new(),
            message_request: Some(AlphaMessageRequest::FileContainingSymbol(
                "grpc.health.v1.Health".to_owned(),
            )),
        },
    ];
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("the server speaks reflection v1alpha")
        .into_inner();
    let names = match answers.next().await.unwrap().unwrap().message_response {
        Some(AlphaMessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>()
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    };
    // Each version lists itself beside the services (tonic-reflection registers its own).
    for expected in [
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(names.contains(&expected.to_owned()), "{names:?}");
    }
    match answers.next().await.unwrap().unwrap().message_response {
        Some(AlphaMessageResponse::FileDescriptorResponse(files)) => {
            let file = files.file_descriptor_proto.first().expect("a file");
            let file = <prost_types::FileDescriptorProto as prost::Message>::decode(&file[..])
                .expect("a FileDescriptorProto");
            assert_eq!(file.package(), "grpc.health.v1");
            assert!(
                file.service.iter().any(|s| s.name() == "Health"),
                "{file:?}"
            );
        }
        other => panic!("unexpected reflection answer: {other:?}"),
    }

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn service_token_is_required_except_for_health() {
    let token = "a-service-token-of-some-length";
    let (url, shutdown, server) = start(Some(token)).await;
    let channel = channel(&url).await;

    // Health answers without credentials: Kubernetes probes carry none.
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    let err = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([list_services()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    assert!(!err.message().contains(token));

    let wrong = grpc::connect(
        &url,
        None,
        Some(&Secret::new("not-the-right-token-at-all")),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = ServerReflectionClient::new(wrong)
        .server_reflection_info(tokio_stream::iter([list_services()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);

    let right = grpc::connect(
        &url,
        None,
        Some(&Secret::new(token)),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut answers = ServerReflectionClient::new(right)
        .server_reflection_info(tokio_stream::iter([list_services()]))
        .await
        .unwrap()
        .into_inner();
    let names = service_names(answers.next().await.unwrap().unwrap().message_response);
    assert!(!names.is_empty());

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_and_reports_not_serving() {
    let (url, shutdown, server) = start(None).await;
    tenantry_common::shutdown::cancel_on_signals(&shutdown).unwrap();
    let channel = channel(&url).await;

    // A watcher sees the server's health change when draining starts.
    let mut watch = HealthClient::new(channel.clone())
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // An in-flight call: a reflection stream that asks one question now and one after SIGTERM.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(list_services()).await.unwrap();
    let mut answers = ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    service_names(answers.next().await.unwrap().unwrap().message_response);

    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    assert_eq!(
        tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("health watch is told about draining")
            .unwrap()
            .unwrap()
            .status(),
        ServingStatus::NotServing
    );
    drop(watch);

    // The call that was in flight when the signal came is still answered...
    tx.send(list_services()).await.unwrap();
    let names = service_names(answers.next().await.unwrap().unwrap().message_response);
    assert!(!names.is_empty());
    assert!(
        !server.is_finished(),
        "server must wait for the in-flight call"
    );

    // ...and once it completes, the server stops by itself, well inside the grace period.
    drop(tx);
    assert!(answers.next().await.is_none());
    drop(answers);
    drop(channel);
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stops after draining")
        .unwrap()
        .unwrap();

    // New connections are refused once it has stopped.
    assert!(Channel::from_shared(url).unwrap().connect().await.is_err());
}

#[tokio::test]
async fn ephemeral_postgres_gives_each_test_its_own_database_and_schema() {
    let pg = testing::postgres();
    let url = pg.create_database().await;
    let other = pg.create_database().await;
    assert_ne!(url, other);

    let conn = db::connect(&DbSettings {
        url: url.clone(),
        schema: "svc_schema".into(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(10),
        application_name: "platform-test".into(),
    })
    .await
    .unwrap();
    conn.execute_unprepared("CREATE TABLE thing (id INT PRIMARY KEY)")
        .await
        .unwrap();
    // The unqualified table landed in the service's schema, not in `public`.
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'thing'",
        ))
        .await
        .unwrap()
        .unwrap();
    let schema: String = row.try_get("", "table_schema").unwrap();
    assert_eq!(schema, "svc_schema");

    conn.execute_unprepared("INSERT INTO thing VALUES (1)")
        .await
        .unwrap();
    let err = conn
        .execute_unprepared("INSERT INTO thing VALUES (1)")
        .await
        .unwrap_err();
    assert!(matches!(
        db::classify(&err),
        db::DbFailure::UniqueViolation(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_connecting_together_share_one_new_schema() {
    // Several replicas starting at once on a fresh database: each must come up, none may fail
    // on PostgreSQL's non-atomic CREATE SCHEMA IF NOT EXISTS.
    let url = testing::postgres().create_database().await;
    let connects = (0..8).map(|i| {
        let settings = DbSettings {
            url: url.clone(),
            schema: "shared_schema".into(),
            max_connections: 1,
            acquire_timeout: Duration::from_secs(10),
            application_name: format!("replica-{i}"),
        };
        tokio::spawn(async move { db::connect(&settings).await })
    });
    for connect in connects.collect::<Vec<_>>() {
        let conn = connect.await.unwrap().expect("every replica connects");
        let row = conn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                "SELECT current_schema() AS s",
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.try_get::<String>("", "s").unwrap(), "shared_schema");
    }
}

#[tokio::test]
async fn unreachable_postgres_is_classified_unavailable() {
    let port = testing::free_port();
    let err = db::connect(&DbSettings {
        url: format!("postgres://postgres@127.0.0.1:{port}/none"),
        schema: "x".into(),
        max_connections: 1,
        acquire_timeout: Duration::from_secs(2),
        application_name: "platform-test".into(),
    })
    .await
    .unwrap_err();
    assert_eq!(db::classify(&err), db::DbFailure::Unavailable);
}

#[tokio::test]
async fn a_dedicated_postgres_can_be_stopped_and_restarted() {
    let pg = testing::DedicatedPostgres::start();
    let url = pg.server().create_database().await;
    let settings = DbSettings {
        url,
        schema: "svc".into(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(2),
        application_name: "platform-test".into(),
    };
    let conn = db::connect(&settings).await.unwrap();
    conn.execute_unprepared("CREATE TABLE t (id INT)")
        .await
        .unwrap();

    pg.stop();
    let err = conn
        .execute_unprepared("INSERT INTO t VALUES (1)")
        .await
        .unwrap_err();
    assert_eq!(db::classify(&err), db::DbFailure::Unavailable, "{err}");

    pg.restart();
    // The pool replaces its dead connections; the data written before the stop is still there.
    let mut attempts = 0;
    loop {
        match conn.execute_unprepared("INSERT INTO t VALUES (2)").await {
            Ok(_) => break,
            Err(e) if attempts < 20 => {
                assert_eq!(db::classify(&e), db::DbFailure::Unavailable, "{e}");
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("database did not come back: {e}"),
        }
    }
}

#[tokio::test]
async fn grpc_is_served_over_tls_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();

    let listener = grpc::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let shutdown = CancellationToken::new();
    let server = {
        let shutdown = shutdown.clone();
        let settings = ServerSettings {
            tls: Some((cert_path.clone(), key_path)),
            ..settings(None)
        };
        tokio::spawn(async move {
            grpc::serve(&settings, listener, Services::new(), &[], shutdown).await
        })
    };

    // A client that trusts the certificate gets answers over TLS.
    let url = format!("https://localhost:{port}");
    let channel = grpc::connect(&url, Some(&cert_path), None, Duration::from_secs(5)).unwrap();
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);

    // A plaintext client cannot talk to it.
    let plain = format!("http://127.0.0.1:{port}");
    let err = HealthClient::new(grpc::connect(&plain, None, None, Duration::from_secs(5)).unwrap())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_ne!(err.code(), tonic::Code::Ok);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
