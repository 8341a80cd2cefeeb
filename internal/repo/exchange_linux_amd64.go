package repo

const sysRenameat2 = 316
