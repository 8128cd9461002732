// Every CLI command, in the order `pgkeep --help` lists them.

import type { Command } from '../command.js'

export const commands: readonly Command[] = []
