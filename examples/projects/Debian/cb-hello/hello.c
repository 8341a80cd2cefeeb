#include <stdio.h>

int main(void)
{
	printf("Hello from Cloud Builder\n");
	return 0;
}
