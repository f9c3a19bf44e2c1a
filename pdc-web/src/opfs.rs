//! A redb storage backend on the Origin Private File System.

use std::cell::RefCell;
use std::io;

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetFileOptions,
    FileSystemReadWriteOptions, FileSystemSyncAccessHandle, WorkerGlobalScope,
};

thread_local! {
    /// The open sync access handles; a backend holds its slot's index.
    static HANDLES: RefCell<Vec<Option<FileSystemSyncAccessHandle>>> = const { RefCell::new(Vec::new()) };
}

fn js_error(what: &str, e: JsValue) -> io::Error {
    let text = e
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    io::Error::other(format!("{what}: {text}"))
}

/// A `redb::StorageBackend` over one OPFS file's
/// `FileSystemSyncAccessHandle` (dedicated workers only). The handle is
/// exclusive: a second one on the same file (another tab) fails to open.
#[derive(Debug)]
pub struct OpfsBackend {
    slot: usize,
}

/// Opens (creating it if absent) the OPFS file `name` and its sync access
/// handle. Fails outside a dedicated worker, and when another handle holds
/// the file (`NoModificationAllowedError`).
pub async fn open_opfs_file(name: &str) -> Result<OpfsBackend, JsValue> {
    let scope: WorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| JsValue::from_str("the OPFS store needs a dedicated worker"))?;
    let root: FileSystemDirectoryHandle =
        JsFuture::from(scope.navigator().storage().get_directory())
            .await?
            .dyn_into()?;
    let options = FileSystemGetFileOptions::new();
    options.set_create(true);
    let file: FileSystemFileHandle =
        JsFuture::from(root.get_file_handle_with_options(name, &options))
            .await?
            .dyn_into()?;
    let handle: FileSystemSyncAccessHandle = JsFuture::from(file.create_sync_access_handle())
        .await?
        .dyn_into()?;
    let slot = HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        h.push(Some(handle));
        h.len() - 1
    });
    Ok(OpfsBackend { slot })
}

impl OpfsBackend {
    fn with<R>(
        &self,
        f: impl FnOnce(&FileSystemSyncAccessHandle) -> io::Result<R>,
    ) -> io::Result<R> {
        HANDLES.with(|h| match h.borrow().get(self.slot) {
            Some(Some(handle)) => f(handle),
            _ => Err(io::Error::other("the OPFS file is closed")),
        })
    }
}

impl Drop for OpfsBackend {
    fn drop(&mut self) {
        // Closing releases the file for the next open (another tab, a reload).
        HANDLES.with(|h| {
            if let Some(handle) = h.borrow_mut().get_mut(self.slot).and_then(Option::take) {
                let _ = handle.flush();
                handle.close();
            }
        });
    }
}

fn at(offset: u64) -> FileSystemReadWriteOptions {
    let o = FileSystemReadWriteOptions::new();
    o.set_at(offset as f64);
    o
}

impl redb::StorageBackend for OpfsBackend {
    fn len(&self) -> io::Result<u64> {
        self.with(|h| {
            h.get_size()
                .map(|n| n as u64)
                .map_err(|e| js_error("size", e))
        })
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.with(|h| {
            let mut buf = vec![0u8; len];
            let n = h
                .read_with_u8_array_and_options(&mut buf, &at(offset))
                .map_err(|e| js_error("read", e))? as usize;
            if n != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read {n} of {len} bytes at {offset}"),
                ));
            }
            Ok(buf)
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|h| {
            h.truncate_with_f64(len as f64)
                .map_err(|e| js_error("truncate", e))
        })
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        self.with(|h| h.flush().map_err(|e| js_error("flush", e)))
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|h| {
            let n = h
                .write_with_u8_array_and_options(data, &at(offset))
                .map_err(|e| js_error("write", e))? as usize;
            if n != data.len() {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("wrote {n} of {} bytes at {offset}", data.len()),
                ));
            }
            Ok(())
        })
    }
}
