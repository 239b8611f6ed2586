//! `GET /api/admin/backup`: a consistent copy of the database while kassa runs.

use crate::http::error::ApiError;
use crate::http::extract::Admin;
use crate::http::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Copies one snapshot of every table into a file beside the data file, streams it, and
/// removes it (the open file stays readable until the answer is sent). Memory stays bounded
/// whatever the size of the database.
pub async fn backup(State(state): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let kassa = &state.kassa;
    let partial = kassa.config.data_dir.join(format!(
        "backup-{}.redb.partial",
        kassa.env.new_uuid().simple()
    ));
    let entries = kassa.store.backup_to(&partial, kassa.env.now()).await;
    let opened = match entries {
        Ok(entries) => tokio::fs::File::open(&partial)
            .await
            .map(|file| (file, entries)),
        Err(error) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(error.into());
        }
    };
    let _ = tokio::fs::remove_file(&partial).await;
    let (file, entries) = opened.map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "BACKUP_FAILED",
            format!("the copy could not be read back: {error}"),
        )
    })?;
    let length = file.metadata().await.map_or(0, |meta| meta.len());
    let name = kassa
        .env
        .now()
        .with_timezone(&chrono_tz::Asia::Seoul)
        .format("kassa-backup-%Y%m%d-%H%M%S.redb");
    let mut response = Body::from_stream(tokio_util::io::ReaderStream::new(file)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) = HeaderValue::from_str(&length.to_string()) {
        headers.insert(header::CONTENT_LENGTH, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    if let Ok(value) = HeaderValue::from_str(&entries.to_string()) {
        headers.insert("x-kassa-entries", value);
    }
    Ok(response)
}
