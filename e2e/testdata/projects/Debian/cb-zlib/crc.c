#include <stdio.h>
#include <string.h>
#include <zlib.h>

int main(void)
{
	const char *s = "Hello from Cloud Builder";
	printf("%08lx\n", crc32(0L, (const Bytef *)s, strlen(s)));
	return 0;
}
