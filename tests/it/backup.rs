//! Online backup: a consistent copy of the database while kassa runs and writes.

use crate::support::{ADMIN_TOKEN, TestApp};
use kassa::domain::OrderId;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn backup(app: &TestApp) -> Vec<u8> {
    let response = app
        .http
        .get(app.url("/api/admin/backup"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let length: usize = response.headers()["content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = response.bytes().await.unwrap().to_vec();
    assert_eq!(bytes.len(), length);
    bytes
}

/// Opens a backup's bytes as a data file of its own.
fn restore(bytes: &[u8]) -> (tempfile::TempDir, kassa::store::Store) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("kassa.redb"), bytes).unwrap();
    let store = kassa::store::Store::open(dir.path(), || [0; 32]).unwrap();
    (dir, store)
}

#[tokio::test]
async fn a_backup_taken_under_write_load_restores_everything_answered_before_it() {
    let app = Arc::new(TestApp::spawn().await);
    app.paid("order-backup-paid", 15_000).await;
    let answered = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for worker in 0..4 {
        let (app, answered, stop) = (app.clone(), answered.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let order_id = format!("order-load-{worker}-{n:05}");
                let (status, _) = app
                    .admin_post(
                        "/api/orders",
                        &json!({ "order_id": order_id, "amount": 1_000, "name": "load" }),
                    )
                    .await;
                if status == StatusCode::CREATED {
                    answered.lock().unwrap().push(order_id);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: Vec<String> = answered.lock().unwrap().clone();
    let copy = backup(&app).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(
        before.len() > 20,
        "the load wrote only {} orders",
        before.len()
    );
    let written = answered.lock().unwrap().len();
    assert!(
        written > before.len(),
        "nothing was written during the backup"
    );

    // The copy taken under load has every order answered before it was asked for.
    let (_dir, restored) = restore(&copy);
    for order_id in &before {
        let order = restored
            .order(&OrderId::parse(order_id).unwrap())
            .await
            .unwrap();
        assert!(order.is_some(), "{order_id} is missing from the backup");
    }
    drop(restored);

    // Once the writes stop, a backup is the store, table for table.
    let quiet = backup(&app).await;
    let (_dir, restored) = restore(&quiet);
    assert_eq!(
        restored.digest().await.unwrap(),
        app.kassa.store.digest().await.unwrap()
    );
    // The copies were removed from beside the data file once sent.
    let leftovers: Vec<String> = std::fs::read_dir(app.kassa.config.data_dir.clone())
        .unwrap()
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("backup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn a_backup_needs_the_admin_token() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .get(app.url("/api/admin/backup"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_restored_file_counts_its_open_cancels_as_unknown_outcomes() {
    let app = TestApp::spawn().await;
    let (payment_id, _) = app.paid("order-restore-open", 15_000).await;
    let intent = app.store_cancel(&payment_id, "restore-open-key").await;
    assert_eq!(intent.state, kassa::domain::IntentState::Open);
    let copy = backup(&app).await;

    let (dir, restored) = restore(&copy);
    let after = restored.cancel_intent(intent.id).await.unwrap().unwrap();
    assert_eq!(after.state, kassa::domain::IntentState::Open);
    assert!(
        after.outcome_unknown,
        "a restored open cancel must ask the PG first"
    );
    assert!(
        after.in_flight.is_some(),
        "it counts as an attempt that was cut off"
    );
    let view = restored
        .payment(kassa::domain::PaymentId::parse(&payment_id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        view.events
            .iter()
            .any(|event| event.detail.contains("restored from a backup")),
        "{:?}",
        view.events
    );
    // The mark is used once: opening the file again changes nothing more.
    let digest = restored.digest().await.unwrap();
    drop(restored);
    // The writer thread lets go of the file once it sees the store dropped.
    let mut again = None;
    for _ in 0..100 {
        match kassa::store::Store::open(dir.path(), || [0; 32]) {
            Ok(store) => {
                again = Some(store);
                break;
            }
            Err(kassa::store::StoreError::Locked(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("{error}"),
        }
    }
    let again = again.expect("the restored file opens again");
    assert_eq!(again.digest().await.unwrap(), digest);

    // The running kassa's own cancel is untouched.
    let original = app
        .kassa
        .store
        .cancel_intent(intent.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!original.outcome_unknown);
    assert!(original.in_flight.is_none());
}

#[tokio::test]
async fn a_restored_file_counts_its_dead_letters_as_unknown_outcomes_too() {
    let app = TestApp::spawn().await;
    let (payment_id, _) = app.paid("order-restore-dead", 15_000).await;
    app.fault("portone.cancel", "status401", 2).await;
    let (status, body) = app
        .cancel(
            &payment_id,
            "restore-dead-key",
            &json!({ "reason": "refund" }),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::ACCEPTED, Some("CANCEL_FAILED"))
    );
    let cancel_id = kassa::domain::CancelId::parse(body["cancel_id"].as_str().unwrap()).unwrap();
    let dead = app
        .kassa
        .store
        .cancel_intent(cancel_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.state, kassa::domain::IntentState::Dead);
    assert!(
        !dead.outcome_unknown,
        "the PG refused it: its outcome is known here"
    );

    let (_dir, restored) = restore(&backup(&app).await);
    let after = restored.cancel_intent(cancel_id).await.unwrap().unwrap();
    assert_eq!(after.state, kassa::domain::IntentState::Dead);
    // A re-drive after the restore (the original may have been re-driven and refunded since)
    // asks the PG first, and for Payple waits for evidence.
    assert!(after.outcome_unknown);
    assert!(after.in_flight.is_none(), "a dead letter holds no attempt");
}
