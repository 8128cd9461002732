// Run before every test file: the memory a base backup's stream is read into (protocol/wire/socket-input.ts), and
// the buffer messages across reads are assembled in (frame-reader.ts), is filled with a pattern as soon as it is
// released, so a consumer that keeps a view of an event's bytes after asking for the next one fails every time (its
// file no longer matches the server's manifest), not by the chance of reuse.
// In-process only: the CLI that tests start runs without it, as users run it.

import { FrameReader } from '../../protocol/wire/frame-reader.js'
import { SocketInput } from '../../protocol/wire/socket-input.js'

SocketInput.poisonReleased = true
FrameReader.poisonReleased = true
