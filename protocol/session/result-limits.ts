// Bounds on what one replication command may answer: rows and bytes. Every command pgkeep runs returns a handful
// of short rows (one for IDENTIFY_SYSTEM, SHOW, TIMELINE_HISTORY and the slot commands; one per tablespace for
// BASE_BACKUP), so a response beyond these bounds is a broken or hostile server, never a real one.

/** The most a command's response may hold before it is refused with a ProtocolError. */
export interface ResultLimits {
  /** DataRows, over all result sets of the response. */
  readonly rows: number
  /** Bytes of every message of the response (headers, notices and row descriptions included). */
  readonly bytes: number
}

/** IDENTIFY_SYSTEM, SHOW, the slot commands, the end of START_REPLICATION and of BASE_BACKUP: one short row each. */
export const SMALL_RESULT: ResultLimits = { rows: 16, bytes: 64 << 10 }

/**
 * The largest timeline history file accepted. A history line is at most about 130 bytes (timeline, LSN and a
 * reason such as `at restore point "<63 bytes>"`), and the file of timeline N has at most N − 1 lines: 1 MiB is
 * about 8000 ancestors, far more than any real cluster accumulates.
 */
export const MAX_TIMELINE_HISTORY_BYTES = 1 << 20

/** TIMELINE_HISTORY: one row holding the file name and the file. */
export const TIMELINE_HISTORY_RESULT: ResultLimits = { rows: 16, bytes: MAX_TIMELINE_HISTORY_BYTES + (64 << 10) }

/**
 * BASE_BACKUP's tablespace list: one row per tablespace of at most about 1 KB (oid, a location of up to MAXPGPATH
 * bytes, a size). 10000 tablespaces is far beyond any real cluster.
 */
export const TABLESPACE_LIST_RESULT: ResultLimits = { rows: 10_000, bytes: 16 << 20 }
