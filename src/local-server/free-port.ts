// A free TCP port, in a module of its own: restore only prints a start command with one, and loading the local
// server (and the PostgreSQL client it connects with) for that cost each restore about 0.1 s.

import { createServer } from 'node:net'

/** A free TCP port on the loopback interface (the server's port number also names its socket file). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
  })
}
