// Every CLI command, in the order `pgkeep --help` lists them.

import type { Command } from '../command.js'
import { backupCommand } from './backup.js'
import { checkCommand } from './check.js'
import { gcCommand } from './gc.js'
import { infoCommand } from './info.js'
import { initCommand } from './init.js'
import { restoreCommand } from './restore.js'
import { unlockCommand } from './unlock.js'
import { verifyCommand } from './verify.js'
import { walGetCommand } from './wal-get.js'
import { walPushCommand } from './wal-push.js'
import { walStreamCommand } from './wal-stream.js'

export const commands: readonly Command[] = [
  checkCommand,
  initCommand,
  backupCommand,
  restoreCommand,
  infoCommand,
  verifyCommand,
  gcCommand,
  walStreamCommand,
  walPushCommand,
  walGetCommand,
  unlockCommand,
]
