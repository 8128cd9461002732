// Which modes the fs driver gives a repository's objects: private, unless the top directory says, with its setgid
// bit and group read and search, that the repository is shared with its group (init --group).

import { describe, expect, it } from 'vitest'
import { fsModesFor } from '../../src/storage/fs.js'

describe('fs repository modes', () => {
  it.each([
    [undefined, 0o600, 0o700],
    [0o700, 0o600, 0o700],
    [0o755, 0o600, 0o700], // group-readable through the umask only: stays private
    [0o2700, 0o600, 0o700],
    [0o2710, 0o600, 0o700],
    [0o2750, 0o640, 0o2750],
    [0o2770, 0o640, 0o2750],
    [0o40000 | 0o2755, 0o640, 0o2750], // with the file-type bits of stat
  ])('top directory %s: files %s, directories %s', (root, file, dir) => {
    expect(fsModesFor(root)).toEqual({ file, dir })
  })
})
