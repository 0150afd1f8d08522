// Device identity: an Ed25519 key pair made in this browser and kept in IndexedDB.
//
// The private key is generated non-extractable, so no script (ours included)
// can ever read it; IndexedDB stores the CryptoKey object itself, which the
// browser keeps opaque. The device id is the lowercase hex SHA-256 of the raw
// 32-byte public key, exactly as the gateway computes it.

const DB_NAME = "edge-control-ui";
const DB_VERSION = 1;
const STORE = "keys";
const KEY_NAME = "device";

export const CONNECT_CONTEXT = "edge-connect-v1";

/** Why this browser cannot hold a device identity here (empty when it can). */
export function secureContextProblems() {
  const problems = [];
  if (!window.isSecureContext) {
    problems.push("not-secure-context");
  }
  if (!window.crypto || !window.crypto.subtle) {
    problems.push("no-webcrypto");
  }
  return problems;
}

export function base64url(bytes) {
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function hex(bytes) {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

function promised(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

function openDatabase() {
  return new Promise((resolve, reject) => {
    if (!window.indexedDB) {
      reject(new Error("IndexedDB is not available"));
      return;
    }
    const request = window.indexedDB.open(DB_NAME, DB_VERSION);
    request.onupgradeneeded = () => {
      request.result.createObjectStore(STORE);
    };
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
    request.onblocked = () => reject(new Error("IndexedDB is blocked by another tab"));
  });
}

/** Store our key pair unless another tab stored one first; returns the one that won. */
async function storeOnce(db, keyPair) {
  const transaction = db.transaction(STORE, "readwrite");
  const store = transaction.objectStore(STORE);
  const existing = await promised(store.get(KEY_NAME));
  if (existing) {
    return existing;
  }
  await promised(store.add(keyPair, KEY_NAME));
  return keyPair;
}

async function readStored(db) {
  const transaction = db.transaction(STORE, "readonly");
  return promised(transaction.objectStore(STORE).get(KEY_NAME));
}

/** An UnsupportedError means the browser has WebCrypto but no Ed25519. */
export class UnsupportedError extends Error {}

async function generateKeyPair() {
  try {
    return await window.crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
  } catch (error) {
    throw new UnsupportedError(`this browser cannot make Ed25519 keys (${error.name || error})`);
  }
}

async function describe(keyPair, persisted) {
  const raw = new Uint8Array(await window.crypto.subtle.exportKey("raw", keyPair.publicKey));
  const digest = new Uint8Array(await window.crypto.subtle.digest("SHA-256", raw));
  return { keyPair, id: hex(digest), publicKey: base64url(raw), persisted };
}

/**
 * The identity of this browser: the stored key pair, or a new one.
 *
 * When IndexedDB is unusable (some private modes) the key lives only in
 * memory and `persisted` is false, so the page can say the pairing will not
 * survive a reload.
 */
export async function loadOrCreateIdentity() {
  let db = null;
  try {
    db = await openDatabase();
  } catch {
    return describe(await generateKeyPair(), false);
  }
  try {
    const stored = await readStored(db);
    if (stored && stored.privateKey && stored.publicKey) {
      return describe(stored, true);
    }
    const winner = await storeOnce(db, await generateKeyPair());
    return describe(winner, true);
  } catch (error) {
    if (error instanceof UnsupportedError) {
      throw error;
    }
    return describe(await generateKeyPair(), false);
  } finally {
    db.close();
  }
}

/** Remove the stored key pair; the next identity will be a new device. */
export async function deleteIdentity() {
  let db;
  try {
    db = await openDatabase();
  } catch {
    return;
  }
  try {
    const transaction = db.transaction(STORE, "readwrite");
    await promised(transaction.objectStore(STORE).delete(KEY_NAME));
  } finally {
    db.close();
  }
}

/** Signature over the exact payload the gateway verifies; base64url without padding. */
export async function signConnect(identity, nonce, signedAt, role) {
  const payload = [CONNECT_CONTEXT, identity.id, nonce, String(signedAt), role].join("\n");
  const signature = await window.crypto.subtle.sign(
    { name: "Ed25519" },
    identity.keyPair.privateKey,
    new TextEncoder().encode(payload),
  );
  return base64url(new Uint8Array(signature));
}
