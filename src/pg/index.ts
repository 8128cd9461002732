// PostgreSQL's own formats, as pure functions over bytes and text (no I/O): LSNs, WAL names and page headers,
// timeline history, CRC-32C, data pages and their checksums, relation paths, pg_control, backup_label,
// tablespace_map, backup_manifest, incremental files and recovery settings.

export * from './lsn.js'
export * from './wal-names.js'
export * from './wal-page.js'
export * from './timeline-history.js'
export * from './crc32c.js'
export * from './page.js'
export * from './relation-path.js'
export * from './pg-control.js'
export * from './backup-label.js'
export * from './tablespace-map.js'
export * from './backup-manifest.js'
export * from './backup-manifest-writer.js'
export * from './incremental-file.js'
export * from './recovery-conf.js'
export * from './data-dir-entry.js'
export * from './versions.js'
