// Every CLI command, in the order `pgkeep --help` lists them.

import type { Command } from '../command.js'
import { backupCommand } from './backup.js'
import { checkCommand } from './check.js'
import { infoCommand } from './info.js'
import { initCommand } from './init.js'
import { verifyCommand } from './verify.js'

export const commands: readonly Command[] = [checkCommand, initCommand, backupCommand, infoCommand, verifyCommand]
