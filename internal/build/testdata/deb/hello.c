#include <stdio.h>

int main(void)
{
	puts("hello from cloud builder");
	return 0;
}
