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

/// A JS exception as text: `Name: message` for an `Error`.
pub(crate) fn js_text(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| format!("{}: {}", String::from(e.name()), String::from(e.message())))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

fn js_error(what: &str, e: JsValue) -> io::Error {
    io::Error::other(format!("{what}: {}", js_text(&e)))
}

/// A `redb::StorageBackend` over one OPFS file's
/// `FileSystemSyncAccessHandle` (dedicated workers only). The handle is
/// exclusive: a second one on the same file (another tab) fails to open.
#[derive(Debug)]
pub struct OpfsBackend {
    slot: usize,
}

async fn opfs_root() -> Result<FileSystemDirectoryHandle, JsValue> {
    let scope: WorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| JsValue::from_str("the OPFS store needs a dedicated worker"))?;
    JsFuture::from(scope.navigator().storage().get_directory())
        .await?
        .dyn_into()
}

/// The file handle of `name`, if the file exists.
async fn existing(root: &FileSystemDirectoryHandle, name: &str) -> Option<FileSystemFileHandle> {
    JsFuture::from(root.get_file_handle(name))
        .await
        .ok()
        .and_then(|h| h.dyn_into().ok())
}

/// Whether the OPFS file `name` exists.
pub async fn opfs_file_exists(name: &str) -> Result<bool, JsValue> {
    Ok(existing(&opfs_root().await?, name).await.is_some())
}

/// Removes the OPFS file `name` if it exists.
pub async fn remove_opfs_file(name: &str) -> Result<(), JsValue> {
    let root = opfs_root().await?;
    if existing(&root, name).await.is_some() {
        JsFuture::from(root.remove_entry(name)).await?;
    }
    Ok(())
}

/// Renames the OPFS file `from` to `to` (`FileSystemHandle.move`, which
/// web-sys does not bind yet: called by name).
pub async fn rename_opfs_file(from: &str, to: &str) -> Result<(), JsValue> {
    let root = opfs_root().await?;
    let handle = existing(&root, from)
        .await
        .ok_or_else(|| JsValue::from_str(&format!("no OPFS file {from}")))?;
    let mv: js_sys::Function = js_sys::Reflect::get(&handle, &JsValue::from_str("move"))?
        .dyn_into()
        .map_err(|_| JsValue::from_str("this browser cannot rename OPFS files"))?;
    let promise: js_sys::Promise = mv.call1(&handle, &JsValue::from_str(to))?.dyn_into()?;
    JsFuture::from(promise).await?;
    Ok(())
}

/// Opens (creating it if absent) the OPFS file `name` and its sync access
/// handle. Fails outside a dedicated worker, and when another handle holds
/// the file (`NoModificationAllowedError`).
pub async fn open_opfs_file(name: &str) -> Result<OpfsBackend, JsValue> {
    let root = opfs_root().await?;
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

/// Opens the pdc store in the OPFS file `name`, creating it atomically on
/// first use, as on native (`pdc_store::create_atomically`): a new store is
/// made and initialised in `<name>.creating`, closed (flushed), then
/// renamed into place, so a tab killed at any instant of the very first
/// open leaves no store or a complete one; a leftover `.creating` file is
/// removed. `options` bound redb's page cache and carry the store's keys
/// (a new store is created encrypted under the first key).
pub async fn open_opfs_store(
    name: &str,
    options: pdc_store::StoreOptions,
) -> Result<pdc_store::Store, OpenError> {
    let js = OpenError::Js;
    if !opfs_file_exists(name).await.map_err(js)? {
        let tmp = format!("{name}.creating");
        remove_opfs_file(&tmp).await.map_err(js)?;
        let backend = open_opfs_file(&tmp).await.map_err(js)?;
        // Dropped at once: the handle is flushed and closed before the rename.
        drop(pdc_store::Store::open_backend(backend, options.clone()).map_err(OpenError::Store)?);
        rename_opfs_file(&tmp, name).await.map_err(js)?;
    }
    let backend = open_opfs_file(name).await.map_err(OpenError::Locked)?;
    pdc_store::Store::open_backend(backend, options).map_err(OpenError::Store)
}

/// Why [`open_opfs_store`] failed.
#[derive(Debug)]
pub enum OpenError {
    /// The browser refused a file operation.
    Js(JsValue),
    /// Another handle (tab) holds the file.
    Locked(JsValue),
    /// The store itself refused (not a store, damaged, newer schema).
    Store(pdc_store::StoreError),
}
