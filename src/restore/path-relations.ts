// How two absolute paths relate, by their text (both normalised): the checks that keep a restore's directories
// apart from each other and from a running server's.

import { isAbsolute, relative } from 'node:path'

/** True when `child` is `parent` or lies inside it. */
export function isInside(child: string, parent: string): boolean {
  const r = relative(parent, child)
  // '..ts' is a name inside `parent`; only '..' itself or a '../' prefix leaves it.
  return r === '' || (r !== '..' && !r.startsWith('../') && !isAbsolute(r))
}

/** True when one path is the other or lies inside it. */
export function overlaps(a: string, b: string): boolean {
  return isInside(a, b) || isInside(b, a)
}
